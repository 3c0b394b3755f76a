"""The real experiments a brand's models were validated against, as evidence for a refit.

:meth:`EvidenceMixin.experiments_for` turns the fidelity validations of a (brand, twin
type) into :class:`~bayestwin.schemas.ExperimentEvidence`, which
:meth:`~bayestwin.service.TwinService.fit` hands to the next fit
(:mod:`bayestwin.model.experiment_terms`).
"""

from __future__ import annotations

import pandas as pd

from bayestwin.core.population import eligible_mask
from bayestwin.schemas import ExperimentEvidence, FidelityResult, TwinModelInfo
from bayestwin.service.models import ModelsMixin
from bayestwin.vocabulary import TwinType

__all__ = ["EvidenceMixin"]


class EvidenceMixin(ModelsMixin):
    """Real experiments as fit evidence (see :class:`~bayestwin.service.TwinService`)."""

    def experiments_for(self, brand: str, twin_type: TwinType | str) -> list[ExperimentEvidence]:
        """The validated real experiments of a (brand, twin type), as fit evidence.

        Every validation of a simulation of any model of the pair that has a real ATE
        and a standard error becomes one :class:`~bayestwin.schemas.ExperimentEvidence`:
        the simulation's intervention type and intensity (or mix), the real result, its
        arm sizes when the experiment source has them, and as population the
        simulation's twins' units (their rows from the simulating model's population,
        so units the next history lacks keep their features), or, for a simulation
        stored without them, the units of that population its target filters allow.
        Each real experiment counts once (its latest validation); a validation without
        an experiment id counts on its own, as ``validation-<tracking id>``.

        Parameters
        ----------
        brand : str
            The brand.
        twin_type : TwinType or str
            The twin type.

        Returns
        -------
        list of ExperimentEvidence
            Oldest validation first.
        """
        kind = TwinType(twin_type)
        latest: dict[str, tuple[FidelityResult, TwinModelInfo]] = {}
        offset = 0
        while True:
            page = self.repository.list_models(
                brand=brand, twin_type=kind, limit=100, offset=offset
            )
            for info in page.items:
                for v in self.repository.fidelity_history(info.model_id):
                    if v.actual_ate is None or not v.actual_se or v.simulation_id is None:
                        continue
                    key = v.actual_experiment_id or f"validation-{v.tracking_id}"
                    when = v.validated_at or v.created_at
                    seen = latest.get(key)
                    if seen is None or (seen[0].validated_at or seen[0].created_at) <= when:
                        latest[key] = (v, info)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        ordered = sorted(
            latest.items(), key=lambda kv: kv[1][0].validated_at or kv[1][0].created_at
        )
        return [self._evidence(key, v, info) for key, (v, info) in ordered]

    def _evidence(
        self, key: str, validation: FidelityResult, info: TwinModelInfo
    ) -> ExperimentEvidence:
        """One validation joined with its simulation, real result and population."""
        assert validation.simulation_id is not None
        sim = self.repository.get_simulation(validation.simulation_id, include_draws=True)
        population = self.load_model(info).population
        if sim.twin_unit_ids:
            wanted = pd.Index(pd.unique(pd.Series(sim.twin_unit_ids, dtype=str)))
            units = population[population["unit_id"].astype(str).isin(wanted)]
        else:
            units = population[eligible_mask(population, sim.intervention_config.target)]
        real = None
        if validation.actual_experiment_id:
            real = self.experiment_source.get_result(validation.actual_experiment_id)
        cfg = sim.intervention_config
        return ExperimentEvidence(
            experiment_id=key,
            intervention_type=sim.intervention_type,
            intensity=cfg.intensity if cfg.intensity > 0 else 1.0,
            intensity_mix=None if cfg.intensity_mix is None else tuple(cfg.intensity_mix),
            ate=float(validation.actual_ate),  # type: ignore[arg-type]
            se=float(validation.actual_se),  # type: ignore[arg-type]
            n_treatment=None if real is None else real.n_treatment,
            n_control=None if real is None else real.n_control,
            units=units,
        )
