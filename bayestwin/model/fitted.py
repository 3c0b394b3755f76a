"""The fitted twin model: posterior, population, diagnostics and provenance.

:class:`FittedTwinModel` is immutable. :class:`bayestwin.model.fit.TwinGenerator`
creates it; the simulation engine reads it; :mod:`bayestwin.store` saves it. It holds
no PyMC objects, so everything downstream of fitting works without PyMC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bayestwin.core.comparison import ModelComparison
from bayestwin.core.posterior import TwinPosterior
from bayestwin.core.rehearsal import Rehearsal
from bayestwin.errors import NotFitError
from bayestwin.vocabulary import TwinType

__all__ = ["Diagnostics", "FittedTwinModel"]


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of a fit and the gate's verdict.

    Attributes
    ----------
    max_r_hat, min_ess_bulk, min_ess_tail : float
        Worst values over all model parameters.
    divergences : int
        Divergent transitions after tuning, all chains.
    min_bfmi : float
        Lowest energy BFMI over chains.
    passed : bool
        Whether every threshold holds.
    reasons : list of str
        One line per failed check (empty when ``passed``).
    """

    max_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    min_bfmi: float
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "max_r_hat": self.max_r_hat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "divergences": self.divergences,
            "min_bfmi": self.min_bfmi,
            "passed": self.passed,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, eq=False)
class FittedTwinModel:
    """A fitted twin model for one (brand, twin type).

    Attributes
    ----------
    brand : str
        Brand the model was fitted on.
    twin_type : TwinType
        Kind of twin.
    posterior : TwinPosterior
        Posterior draws as arrays.
    population : DataFrame
        One row per unit (``unit_id`` plus the encoder's raw columns), at its latest
        period: who twins are drawn from.
    diagnostics : Diagnostics
        Convergence diagnostics and the gate's verdict.
    spec_hash : str
        Hash of the spec and the package version (not the registry's model UUID).
    spec : dict
        The model spec (JSON-ready).
    provenance : dict
        Package versions, training-data hash, seed, fit time, sampler.
    trace : object, optional
        The full ``xarray.DataTree`` of the fit, when kept.
    override_diagnostics : bool
        When True the model may serve even though its diagnostics failed.
    max_intensity : float, optional
        The largest intensity in the history the model was fitted on; the simulation
        requests refuse intensities far above it
        (:data:`~bayestwin.engine.requests.INTENSITY_RANGE_FACTOR`). None when unknown
        (a model built by hand, or saved before it was recorded).
    rehearsal : Rehearsal, optional
        The placebo campaigns run on the model's own history after the fit, and how
        its simulations judged them (:mod:`bayestwin.engine.rehearsal`). None when no
        rehearsal ran (or the model was saved before they were recorded).
    comparison : ModelComparison, optional
        PSIS-LOO over units of this model against the same model without its unit and
        period effects (:mod:`bayestwin.model.comparison`). None when none was asked
        for.
    """

    brand: str
    twin_type: TwinType
    posterior: TwinPosterior
    population: pd.DataFrame
    diagnostics: Diagnostics
    spec_hash: str
    spec: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    trace: Any = None
    override_diagnostics: bool = False
    max_intensity: float | None = None
    rehearsal: Rehearsal | None = None
    comparison: ModelComparison | None = None

    @property
    def fit_seed(self) -> int:
        """The fit's random seed (0 when the fit drew a fresh one): what seeds its checks."""
        seed = self.provenance.get("random_seed")
        return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0

    @property
    def fit_for_use(self) -> bool:
        """Whether the model may serve simulations (diagnostics passed or overridden)."""
        return self.diagnostics.passed or self.override_diagnostics

    def require_usable(self) -> None:
        """Raise unless :attr:`fit_for_use`.

        Raises
        ------
        NotFitError
            Code ``"model_not_usable"``: the diagnostics failed and were not overridden.
        """
        if not self.fit_for_use:
            reasons = "; ".join(self.diagnostics.reasons) or "diagnostics failed"
            raise NotFitError(
                f"model {self.spec_hash} ({self.brand}/{self.twin_type.value}) failed its "
                f"diagnostics and is not fit for use: {reasons}. Refit with more draws, or "
                "pass override_diagnostics=True to use it anyway.",
                code="model_not_usable",
            )

    @property
    def outcome_family(self) -> str:
        """The outcome family."""
        return self.posterior.family
