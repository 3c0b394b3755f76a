"""The record of a model comparison: PSIS-LOO of a fit against the model without its panel terms.

:func:`bayestwin.model.comparison.compare_panel_terms` fills it; the fitted model
carries it (:attr:`bayestwin.model.fitted.FittedTwinModel.comparison`), the model
directory and the MLflow run store it, and ``bayestwin fit`` prints it. It is plain
data, so everything downstream of fitting reads it without PyMC or ArviZ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelComparison", "ModelScore"]


@dataclass(frozen=True)
class ModelScore:
    """One model's leave-one-unit-out score.

    Attributes
    ----------
    name : str
        ``"panel"`` (the fitted model) or ``"pooled"`` (the same model without unit
        and period effects).
    terms : str
        The panel terms the model has, in words.
    elpd : float
        Expected log predictive density of a left-out unit's rows, summed over the
        scored units (PSIS-LOO).
    se : float
        Its standard error.
    p : float
        Effective number of parameters (``p_loo``).
    rank : int
        0 for the better model.
    elpd_diff : float
        ``elpd`` below the better model's (0 for it).
    dse : float
        Standard error of ``elpd_diff`` (paired over units).
    weight : float
        Stacking weight.
    high_pareto_k : int
        Scored units whose Pareto ``k`` exceeds the sample-size threshold (ArviZ's
        ``good_k``): their leave-out estimate is unreliable.
    """

    name: str
    terms: str
    elpd: float
    se: float
    p: float
    rank: int
    elpd_diff: float
    dse: float
    weight: float
    high_pareto_k: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "name": self.name,
            "terms": self.terms,
            "elpd": self.elpd,
            "se": self.se,
            "p": self.p,
            "rank": self.rank,
            "elpd_diff": self.elpd_diff,
            "dse": self.dse,
            "weight": self.weight,
            "high_pareto_k": self.high_pareto_k,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelScore:
        """Rebuild a score from :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            terms=str(data["terms"]),
            elpd=float(data["elpd"]),
            se=float(data["se"]),
            p=float(data["p"]),
            rank=int(data["rank"]),
            elpd_diff=float(data["elpd_diff"]),
            dse=float(data["dse"]),
            weight=float(data["weight"]),
            high_pareto_k=int(data["high_pareto_k"]),
        )


@dataclass(frozen=True)
class ModelComparison:
    """PSIS-LOO of a fit against the same model without its unit and period effects.

    Attributes
    ----------
    models : list of ModelScore
        The two models, the better first (empty when the comparison did not run).
    units_scored : int
        Units left out one at a time (a seeded subsample when the history has more
        than the comparison's ``max_units``).
    units : int
        Units in the history.
    seed : int
        Seed of the subsample and of the pooled model's fit.
    seconds : float
        Wall time of the comparison (the pooled fit included).
    reason : str, optional
        Why no comparison ran (no panel terms, experiment terms, no trace, an error);
        None when it ran.
    """

    models: list[ModelScore] = field(default_factory=list)
    units_scored: int = 0
    units: int = 0
    seed: int = 0
    seconds: float = 0.0
    reason: str | None = None

    @property
    def preferred(self) -> str | None:
        """The name of the better model (None when the comparison did not run)."""
        return self.models[0].name if self.models else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "models": [m.to_dict() for m in self.models],
            "units_scored": self.units_scored,
            "units": self.units,
            "seed": self.seed,
            "seconds": self.seconds,
            "reason": self.reason,
            "preferred": self.preferred,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelComparison:
        """Rebuild a comparison from :meth:`to_dict`."""
        return cls(
            models=[ModelScore.from_dict(m) for m in data.get("models", [])],
            units_scored=int(data.get("units_scored", 0)),
            units=int(data.get("units", 0)),
            seed=int(data.get("seed", 0)),
            seconds=float(data.get("seconds", 0.0)),
            reason=data.get("reason"),
        )
