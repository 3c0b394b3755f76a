"""FidelityTracker: compare simulations with real experiments and score a model.

The tracker applies the core rules to one simulation and its real experiment; nothing
here touches storage or reads the settings. It works on the results it is given (a list
of past :class:`~bayestwin.schemas.FidelityResult`) and returns new values; persisting
them is the store's job, and its thresholds are a
:class:`~bayestwin.core.grading.FidelityThresholds` passed in.

The rules live with the maths they belong to:

* the real result and its standard error: :mod:`bayestwin.core.outcomes`;
* the predictive distribution of the observed ATE and the PIT:
  :mod:`bayestwin.core.predictive`;
* the prediction error, the grade, the model fidelity score and the warning:
  :mod:`bayestwin.core.grading`;
* calibration across many validations: :mod:`bayestwin.core.calibration_report`.

**Noise of the real test.** The predictive adds the real test's sampling noise to the
simulation's population ATE draws: its reported standard error by default
(``noise="reported"``), or ``sqrt(sd_t^2 / n_t + sd_c^2 / n_c)`` from the simulation's
predicted outcome sds at the real arm sizes (``noise="model"``). A simulation without
``ate_draws`` is approximated by a normal posterior with sd
``sd_ci = (ci_upper - ci_lower) / (2 z)``.

**Standardised error**: ``(mean(ate_draws) - actual_ate) / sqrt(var(ate_draws) + se^2)``
(``var`` with ``ddof=1``): the real result's distance from the predictive mean in
predictive sds, about Normal(0, 1) for a calibrated model. It uses the posterior *mean*
rather than ``simulated_ate`` (the engine reports the median), so that a skewed but
calibrated posterior is not read as biased. Without draws it is
``(simulated_ate - actual_ate) / sqrt(sd_ci^2 + se^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bayestwin.core.grading import (
    FidelityThresholds,
    error_floor,
    fidelity_warning,
    grade_prediction_error,
    model_fidelity_score,
    prediction_error,
    validations_in_window,
)
from bayestwin.core.intervals import INTERVAL_LEVELS, z_two_sided
from bayestwin.core.outcomes import outcome_from_frame, outcome_standard_error
from bayestwin.core.predictive import ATEPredictive, level_key, observed_ate_se
from bayestwin.errors import FieldProblem, InvalidInputError
from bayestwin.schemas import ExperimentOutcome, FidelityResult, SimulationResult, utcnow
from bayestwin.vocabulary import FidelityGrade

__all__ = ["FidelitySummary", "FidelityTracker", "NoiseSource"]

NoiseSource = Literal["reported", "model"]
"""Sampling noise of the real test in the predictive (see :class:`FidelityTracker`)."""

GRADED: tuple[FidelityGrade, ...] = (
    FidelityGrade.EXCELLENT,
    FidelityGrade.GOOD,
    FidelityGrade.FAIR,
    FidelityGrade.POOR,
)
"""The grades of validated results, best first (the keys of the summary's counts)."""


def _posterior_draws(simulation: SimulationResult) -> tuple[NDArray[np.float64], float]:
    """Posterior ATE draws and the extra normal sd that stands for missing draws."""
    if simulation.ate_draws:
        return np.asarray(simulation.ate_draws, dtype=float), 0.0
    if simulation.simulated_ate is None:
        raise InvalidInputError(
            "the simulation has no simulated_ate; only a completed one validates",
            field="simulated_ate",
        )
    lo, hi = simulation.simulated_ci_lower, simulation.simulated_ci_upper
    sd = 0.0
    if lo is not None and hi is not None:
        sd = (hi - lo) / (2.0 * z_two_sided(simulation.confidence_level))
    return np.array([simulation.simulated_ate]), float(sd)


def _too_extreme(real: float, se: float) -> InvalidInputError:
    """The error for a real result whose comparison with a simulation overflows."""
    message = (
        f"the real result (actual_ate {real:.6g}, standard error {se:.3g}) is too extreme "
        "to compare with the simulation: the comparison is not a finite number"
    )
    return InvalidInputError(
        message,
        field="actual_ate",
        problems=[
            FieldProblem("actual_ate", message),
            FieldProblem(
                "actual_se", "with actual_ate, this standard error (given or from the CI) overflows"
            ),
        ],
    )


@dataclass(frozen=True)
class FidelitySummary:
    """A model's fidelity over its validation window.

    Attributes
    ----------
    score : float or None
        Model fidelity score; ``None`` while unvalidated.
    n_validations : int
        Validations in the window.
    n_required : int
        ``min_validations_for_score``.
    warning : bool
        Whether the score is below ``min_fidelity_score``.
    reason : str or None
        Why it warns.
    grade_counts : dict of str to int
        Validations per grade in the window.
    """

    score: float | None
    n_validations: int
    n_required: int
    warning: bool
    reason: str | None
    grade_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "score": self.score,
            "n_validations": self.n_validations,
            "n_required": self.n_required,
            "warning": self.warning,
            "reason": self.reason,
            "grade_counts": dict(self.grade_counts),
        }


class FidelityTracker:
    """Validate simulations against real experiments and score a model's fidelity.

    The tracker holds thresholds only; history is passed in and results are returned.

    Parameters
    ----------
    thresholds : FidelityThresholds, optional
        ``min_effect_threshold``, ``min_fidelity_score``,
        ``fidelity_validation_window_days`` and ``min_validations_for_score`` (default:
        ``FidelityThresholds()``, the values of ``config/digital_twin_config.yaml``).
    noise : {"reported", "model"}
        Sampling noise of the real test in the predictive: its reported standard error,
        or the simulation's predicted outcome sds at the real arm sizes.
    levels : sequence of float
        Levels of the central predictive intervals to check.
    """

    def __init__(
        self,
        thresholds: FidelityThresholds | None = None,
        *,
        noise: NoiseSource = "reported",
        levels: Sequence[float] = INTERVAL_LEVELS,
    ) -> None:
        if noise not in ("reported", "model"):
            raise InvalidInputError(
                f"noise must be 'reported' or 'model', got {noise!r}", field="noise"
            )
        for level in levels:
            if not 0.0 < level < 1.0:
                raise InvalidInputError(
                    f"interval levels must be in (0, 1), got {level}", field="levels"
                )
        self.thresholds = thresholds if thresholds is not None else FidelityThresholds()
        self.noise: NoiseSource = noise
        self.levels = tuple(float(v) for v in levels)

    # -- one validation ----------------------------------------------------------------
    def predictive(self, simulation: SimulationResult, outcome: ExperimentOutcome) -> ATEPredictive:
        """Predictive distribution of the observed ATE of ``outcome``'s test.

        Parameters
        ----------
        simulation : SimulationResult
            A completed simulation.
        outcome : ExperimentOutcome
            The real result (its SE and arm sizes set the sampling noise).

        Returns
        -------
        ATEPredictive
        """
        draws, extra_sd = _posterior_draws(simulation)
        se = self.sampling_se(simulation, outcome)
        return ATEPredictive(draws, math.sqrt(se**2 + extra_sd**2))

    def sampling_se(self, simulation: SimulationResult, outcome: ExperimentOutcome) -> float:
        """Standard error of the real test's ATE used as its sampling noise.

        ``noise="reported"``: the outcome's own SE (or the one implied by its CI).
        ``noise="model"``: ``sqrt(sd_t^2 / n_t + sd_c^2 / n_c)`` from the simulation's
        predicted outcome sds and the real arm sizes.

        Parameters
        ----------
        simulation : SimulationResult
            A completed simulation.
        outcome : ExperimentOutcome
            The real result.

        Returns
        -------
        float
        """
        if self.noise == "reported":
            return outcome_standard_error(outcome)
        sd_t, sd_c = simulation.outcome_sd_treated, simulation.outcome_sd_control
        if sd_t is None or sd_c is None:
            raise InvalidInputError(
                "noise='model' needs the simulation's outcome_sd_treated and outcome_sd_control",
                field="outcome_sd_control" if sd_c is None else "outcome_sd_treated",
            )
        return float(observed_ate_se(outcome.n_treatment, outcome.n_control, sd_c, sd_t))

    def validate(
        self,
        simulation: SimulationResult,
        outcome: ExperimentOutcome | pd.DataFrame | None,
        *,
        family: str | None = None,
        actual_experiment_id: str | None = None,
        validated_at: datetime | None = None,
        history: Sequence[FidelityResult] | None = None,
    ) -> FidelityResult:
        """Compare one simulation with its real experiment.

        Parameters
        ----------
        simulation : SimulationResult
            A completed simulation (``simulated_ate`` set; ``ate_draws`` recommended).
        outcome : ExperimentOutcome, DataFrame or None
            The real result; a DataFrame goes through
            :func:`~bayestwin.core.outcomes.outcome_from_frame`. ``None`` gives an
            unvalidated result (no comparison yet).
        family : str, optional
            Outcome family for a DataFrame (default: the simulation's).
        actual_experiment_id : str, optional
            Overrides the outcome's identifier.
        validated_at : datetime, optional
            Time of the validation (default: now, UTC).
        history : sequence of FidelityResult, optional
            The model's earlier results; when given, ``model_fidelity_score`` and
            ``fidelity_warning`` of the returned result cover them plus this one.

        Returns
        -------
        FidelityResult
            Error, grade, standardised error, PIT and predictive-interval hits.
        """
        if simulation.simulated_ate is None:
            raise InvalidInputError(
                "the simulation has no simulated_ate; only a completed one validates",
                field="simulated_ate",
            )
        when = validated_at if validated_at is not None else utcnow()
        if outcome is None:
            pending = FidelityResult(
                simulation_id=simulation.simulation_id,
                actual_experiment_id=actual_experiment_id,
                simulated_ate=float(simulation.simulated_ate),
                fidelity_grade=FidelityGrade.UNVALIDATED,
                validation_notes="no real experiment result yet",
            )
            return self._with_score(pending, history, when)
        if isinstance(outcome, pd.DataFrame):
            fam = family if family is not None else simulation.outcome_family
            if fam is None:
                raise InvalidInputError(
                    "give family= (the simulation has no outcome_family)", field="family"
                )
            outcome = outcome_from_frame(outcome, fam, actual_experiment_id=actual_experiment_id)
        result = self._compare(simulation, outcome, actual_experiment_id, when)
        return self._with_score(result, history, when)

    def _standardized_error(
        self, simulation: SimulationResult, outcome: ExperimentOutcome, real: float
    ) -> float | None:
        draws, extra_sd = _posterior_draws(simulation)
        var_sim = float(draws.var(ddof=1)) if draws.size > 1 else extra_sd**2
        denom = math.sqrt(var_sim + self.sampling_se(simulation, outcome) ** 2)
        return (float(draws.mean()) - real) / denom if denom > 0.0 else None

    def _predictive_numbers(
        self, simulation: SimulationResult, outcome: ExperimentOutcome, real: float, se: float
    ) -> tuple[float | None, float, dict[str, tuple[float, float]]]:
        """The standardized error, the PIT and the predictive intervals of ``real``.

        Raises
        ------
        InvalidInputError
            Naming ``actual_ate`` and ``actual_se``, if the real result is so extreme
            that one of them is not a finite number (e.g. ATE 1e308 with SE 1e-300).
        """
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                pred = self.predictive(simulation, outcome)
                z = self._standardized_error(simulation, outcome, real)
                pit = float(np.clip(pred.pit(real), 0.0, 1.0))
                intervals = {level_key(lv): pred.interval(lv) for lv in self.levels}
        except (OverflowError, FloatingPointError, ZeroDivisionError):
            raise _too_extreme(real, se) from None
        numbers = [se, pit, *(b for bounds in intervals.values() for b in bounds)]
        if not all(math.isfinite(v) for v in numbers) or (z is not None and not math.isfinite(z)):
            raise _too_extreme(real, se)
        return z, pit, intervals

    def _compare(
        self,
        simulation: SimulationResult,
        outcome: ExperimentOutcome,
        actual_experiment_id: str | None,
        when: datetime,
    ) -> FidelityResult:
        """The validation of a completed simulation against a real result."""
        assert simulation.simulated_ate is not None  # checked by validate
        sim_ate = float(simulation.simulated_ate)
        real = float(outcome.actual_ate)
        se = outcome_standard_error(outcome)
        z, pit, intervals = self._predictive_numbers(simulation, outcome, real, se)

        control_mean = (
            outcome.control_mean if outcome.control_mean is not None else simulation.control_mean
        )
        threshold = (
            simulation.min_effect_threshold
            if simulation.min_effect_threshold is not None
            else self.thresholds.min_effect_threshold
        )
        floor = error_floor(control_mean=control_mean, min_effect_threshold=threshold, actual_se=se)
        error = prediction_error(sim_ate, real, floor)
        if not math.isfinite(error):
            raise _too_extreme(real, se)
        grade = grade_prediction_error(error)
        hits = {k: bool(lo <= real <= hi) for k, (lo, hi) in intervals.items()}

        notes = (
            f"real ATE {real:.6g} (SE {se:.3g}, n {outcome.n_treatment}/{outcome.n_control}) "
            f"vs simulated {sim_ate:.6g}; error {error:.1%} of max(|real|, {floor:.3g}) "
            f"-> {grade.value}; PIT {pit:.3f}; inside predictive "
            + ", ".join(f"{float(k):.0%}: {'yes' if v else 'no'}" for k, v in hits.items())
        )
        return FidelityResult(
            simulation_id=simulation.simulation_id,
            actual_experiment_id=actual_experiment_id or outcome.actual_experiment_id,
            simulated_ate=sim_ate,
            actual_ate=real,
            actual_se=se,
            prediction_error=error,
            fidelity_grade=grade,
            standardized_error=z,
            pit=pit,
            in_predictive_interval=hits,
            predictive_intervals=intervals,
            validation_notes=notes,
            validated_at=when,
        )

    def _with_score(
        self,
        result: FidelityResult,
        history: Sequence[FidelityResult] | None,
        as_of: datetime,
    ) -> FidelityResult:
        if history is None:
            return result
        summary = self.summarize([*history, result], as_of=as_of)
        return result.model_copy(
            update={"model_fidelity_score": summary.score, "fidelity_warning": summary.warning}
        )

    # -- a model's history ---------------------------------------------------------------
    def model_fidelity_score(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> float | None:
        """Model fidelity score with this tracker's window and minimum count.

        Parameters
        ----------
        history : sequence of FidelityResult
            The model's results.
        as_of : datetime, optional
            End of the window (default: now, UTC).

        Returns
        -------
        float or None
            See :func:`~bayestwin.core.grading.model_fidelity_score`.
        """
        return model_fidelity_score(
            history,
            as_of=as_of,
            window_days=self.thresholds.fidelity_validation_window_days,
            min_validations=self.thresholds.min_validations_for_score,
        )

    def summarize(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> FidelitySummary:
        """Score, validation count, warning and grade counts over the window.

        Parameters
        ----------
        history : sequence of FidelityResult
            The model's results.
        as_of : datetime, optional
            End of the window (default: now, UTC).

        Returns
        -------
        FidelitySummary
        """
        end = as_of if as_of is not None else utcnow()
        window = validations_in_window(
            history, end, self.thresholds.fidelity_validation_window_days
        )
        score = self.model_fidelity_score(history, as_of=end)
        warn, reason = fidelity_warning(score, self.thresholds, n_validations=len(window))
        counts = {g.value: 0 for g in GRADED}
        for r in window:
            counts[r.fidelity_grade.value] = counts.get(r.fidelity_grade.value, 0) + 1
        return FidelitySummary(
            score=score,
            n_validations=len(window),
            n_required=self.thresholds.min_validations_for_score,
            warning=warn,
            reason=reason,
            grade_counts=counts,
        )

    def warning(
        self, history: Sequence[FidelityResult], *, as_of: datetime | None = None
    ) -> tuple[bool, str | None]:
        """``(True, reason)`` when the model's score is under ``min_fidelity_score``.

        Parameters
        ----------
        history : sequence of FidelityResult
            The model's results.
        as_of : datetime, optional
            End of the window (default: now, UTC).

        Returns
        -------
        (bool, str or None)
        """
        summary = self.summarize(history, as_of=as_of)
        return summary.warning, summary.reason
