"""World kinds: the model's own structure, and the panel processes it does not assume.

:func:`draw_kind_configs` draws ``worlds_per_kind`` worlds of each kind, reproducibly.
Every world starts from the same *base* (one brand, random assignment, mixed zero,
negative and positive mean effects, 2-4 intervention types, 4-8 segments of uneven
sizes, three numeric features and one categorical one; families cycle through
hcp/bernoulli, patient/poisson and territory/gaussian) and adds its kind's process:

``in_model``
    Nothing: the structure the twin model fits.
``synthetic_default_two_types``
    The generator's own defaults (its default effects, spreads, five segments, four
    numeric features, half the units treated) with two intervention types.
``unit_intercept_fixed``
    Unit random intercepts at an ICC drawn from [0.2, 0.5] (link scale); each unit
    keeps its treatment in every period.
``staggered``
    The same unit intercepts; a treated unit starts in a period drawn from the third
    to the last (at least two untreated periods first) and stays treated.
``on_off``
    The same unit intercepts; a treated unit's campaign is on in each period with
    probability 1/2, at an intensity drawn afresh each time.
``trend_season``
    ``staggered`` plus a trend (+-0.02 to 0.06 per period on the link scale) and a
    seasonal wave of four periods (amplitude 0.1 to 0.2; gaussian: half of both).
``hidden_timing_confounder``
    ``staggered`` where units with a high hidden intercept are treated more often and
    earlier (``timing_confounding`` from 1 to 2: log-odds per sd of the intercept).
``time_varying_confounder``
    ``staggered`` where each unit's level drifts (a hidden slope of sd 0.03 to 0.06 per
    period on the link scale; gaussian: half) and units whose level is rising are
    treated more often (``trend_confounding`` from 1 to 2: log-odds per sd of the
    slope). Out of the model's reach: neither unit nor period effects absorb it.
``threshold_effect``
    The base plus an effect shift of half to all of the family's largest effect, of
    either sign, for units above a cut (-0.5 to 0.5 sd) of the first numeric feature.
``heavy_tail``
    Gaussian worlds only, with Student-t noise of 2.5, 3 or 4 degrees of freedom.

World ids are ``1000 * (index of the kind in WORLD_KINDS) + j``, so a kind's worlds are
the same whichever other kinds run beside it. The truth of every world is the ATE of the
simulated twins, with their own unit effects, in the period after the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bayestwin.calibration.worlds import _EFFECT_RANGE, _SEGMENT_SD, WorldConfig, _mix_effects
from bayestwin.core.families import Family
from bayestwin.synthetic.catalog import DEFAULT_EFFECTS
from bayestwin.vocabulary import TwinType

__all__ = [
    "KIND_LABELS",
    "PANEL_KINDS",
    "WORLD_KINDS",
    "draw_kind_configs",
    "kind_label",
    "parse_kinds",
]

#: The world kinds, in report order.
WORLD_KINDS: tuple[str, ...] = (
    "in_model",
    "synthetic_default_two_types",
    "unit_intercept_fixed",
    "staggered",
    "on_off",
    "trend_season",
    "hidden_timing_confounder",
    "threshold_effect",
    "heavy_tail",
    "time_varying_confounder",
)
#: The kinds whose histories have persistent unit heterogeneity.
PANEL_KINDS: tuple[str, ...] = (
    "unit_intercept_fixed",
    "staggered",
    "on_off",
    "trend_season",
    "hidden_timing_confounder",
)
#: One line per kind, for the report.
KIND_LABELS: dict[str, str] = {
    "in_model": "the model's own structure",
    "synthetic_default_two_types": "generator defaults, 2 intervention types",
    "unit_intercept_fixed": "unit random intercept (ICC 0.2-0.5), fixed treatment",
    "staggered": "unit intercept, treatment starts mid-history",
    "on_off": "unit intercept, treatment on and off",
    "trend_season": "unit intercept + trend + seasonality, staggered",
    "hidden_timing_confounder": "treatment timing follows the unit's hidden level",
    "threshold_effect": "effect with a threshold in a feature",
    "heavy_tail": "gaussian outcome with Student-t noise",
    "time_varying_confounder": "treatment follows the unit's hidden rising trend (out of reach)",
}


def kind_label(kind: str) -> str:
    """The report's line for a kind, also for a copy with experiments (``"<kind>+k3"``)."""
    base, sep, k = kind.partition("+k")
    label = KIND_LABELS.get(base, base)
    if sep and k.isdigit():
        return f"{label}, then {k} real experiment{'s' if k != '1' else ''}"
    return label


_FAMILIES: tuple[tuple[TwinType, Family], ...] = (
    (TwinType.HCP, "bernoulli"),
    (TwinType.PATIENT, "poisson"),
    (TwinType.TERRITORY, "gaussian"),
)
_KIND_STRIDE = 1000


def parse_kinds(text: str) -> tuple[str, ...]:
    """Kinds from a comma-separated list (``all``: every kind), checked."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return WORLD_KINDS
    unknown = [n for n in names if n not in WORLD_KINDS]
    if unknown or not names:
        raise ValueError(f"unknown world kind(s) {unknown}; known: {', '.join(WORLD_KINDS)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class _Base:
    """What every world of a kind run shares: the seed and the sizes."""

    random_seed: int
    n_units: tuple[int, int]
    n_periods: int


def _base_world(base: _Base, kind: str, j: int, rng: np.random.Generator) -> WorldConfig:
    """The base world ``j`` of a kind (random assignment, mixed effects, no panel process)."""
    k_i = WORLD_KINDS.index(kind)
    twin_type, family = _FAMILIES[2] if kind == "heavy_tail" else _FAMILIES[j % len(_FAMILIES)]
    n_types = int(rng.integers(2, 5))
    return WorldConfig(
        world_id=_KIND_STRIDE * k_i + j,
        seed=base.random_seed + _KIND_STRIDE * k_i + j,
        twin_type=twin_type.value,
        family=family,
        n_units=int(rng.integers(base.n_units[0], base.n_units[1] + 1)),
        n_periods=base.n_periods,
        n_segments=int(rng.integers(4, 9)),
        n_numeric=3,
        n_intervention_types=n_types,
        effect_design="mix",
        effect_means=_mix_effects(family, n_types, rng),
        effect_segment_sd=float(_SEGMENT_SD[family] * rng.uniform(0.5, 1.5)),
        interaction_sd=0.05,
        n_interacting=2,
        dose_rate=1.0,
        treated_fraction=float(rng.uniform(0.3, 0.6)),
        type_weights=(1.0,) * n_types,
        rare_type=None,
        segment_concentration=float(rng.choice([0.7, 2.0, 6.0])),
        confounding=0.0,
        primary_type=int(rng.integers(n_types)),
        kind=kind,
    )


def _generator_defaults(world: WorldConfig, rng: np.random.Generator) -> WorldConfig:
    """The generator's own defaults, with two intervention types."""
    return replace(
        world,
        n_intervention_types=2,
        n_segments=5,
        n_numeric=4,
        effect_means=tuple(DEFAULT_EFFECTS[world.family][:2]),
        effect_segment_sd=0.1,
        interaction_sd=0.08,
        treated_fraction=0.5,
        type_weights=(1.0, 1.0),
        segment_concentration=4.0,
        primary_type=int(rng.integers(2)),
    )


def _kind_process(world: WorldConfig, rng: np.random.Generator) -> WorldConfig:
    """Add the world's kind's process to its base (draws in a fixed order)."""
    kind = world.kind
    if kind == "synthetic_default_two_types":
        return _generator_defaults(world, rng)
    extra: dict[str, Any] = {}
    if kind in (*PANEL_KINDS, "time_varying_confounder"):
        extra["unit_icc"] = float(rng.uniform(0.2, 0.5))
    if kind in ("staggered", "trend_season", "hidden_timing_confounder", "time_varying_confounder"):
        extra["adoption"] = "staggered"
    if kind == "on_off":
        extra["adoption"] = "on_off"
    if kind == "trend_season":
        scale = 0.5 if world.family == "gaussian" else 1.0
        sign = 1.0 if rng.random() < 0.5 else -1.0
        extra["trend"] = sign * scale * float(rng.uniform(0.02, 0.06))
        extra["season_amplitude"] = scale * float(rng.uniform(0.1, 0.2))
    if kind == "hidden_timing_confounder":
        extra["timing_confounding"] = float(rng.uniform(1.0, 2.0))
    if kind == "time_varying_confounder":
        scale = 0.5 if world.family == "gaussian" else 1.0
        extra["unit_trend_sd"] = scale * float(rng.uniform(0.03, 0.06))
        extra["trend_confounding"] = float(rng.uniform(1.0, 2.0))
    if kind == "threshold_effect":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        hi = _EFFECT_RANGE[world.family][1]
        extra["threshold_effect"] = sign * hi * float(rng.uniform(0.5, 1.0))
        extra["threshold_at"] = float(rng.uniform(-0.5, 0.5))
    if kind == "heavy_tail":
        extra["noise_df"] = float(rng.choice([2.5, 3.0, 4.0]))
    return replace(world, **extra)


def draw_kind_configs(
    kinds: Sequence[str] = WORLD_KINDS,
    worlds_per_kind: int = 6,
    *,
    random_seed: int = 20250,
    n_units: tuple[int, int] = (1000, 1000),
    n_periods: int = 8,
) -> list[WorldConfig]:
    """Draw ``worlds_per_kind`` worlds of each kind, reproducibly (module docstring).

    Parameters
    ----------
    kinds : sequence of str
        Kinds of :data:`WORLD_KINDS`; the list holds world 0 of each, then world 1...
    worlds_per_kind : int
        Worlds of each kind.
    random_seed : int
        Seed of the configurations; world ``j`` of kind ``i`` has history seed
        ``random_seed + 1000 * i + j``.
    n_units : (int, int)
        Range of units per world.
    n_periods : int
        Periods per unit (staggered kinds need at least 3).

    Returns
    -------
    list of WorldConfig
    """
    unknown = [k for k in kinds if k not in WORLD_KINDS]
    if unknown:
        raise ValueError(f"unknown world kind(s) {unknown}; known: {', '.join(WORLD_KINDS)}")
    if not 1 <= worlds_per_kind < _KIND_STRIDE:
        raise ValueError(f"worlds_per_kind must be in [1, {_KIND_STRIDE}), got {worlds_per_kind}")
    if not 1 <= n_units[0] <= n_units[1]:
        raise ValueError(f"n_units must be a range (lo, hi) with 1 <= lo <= hi, got {n_units}")
    if n_periods < 3:
        raise ValueError(f"n_periods must be >= 3 (two untreated periods first), got {n_periods}")
    base = _Base(random_seed, n_units, n_periods)
    configs = []
    # world j of every kind, then world j + 1: a run stopped early has every kind
    for j in range(worlds_per_kind):
        for kind in kinds:
            rng = np.random.default_rng([random_seed, WORLD_KINDS.index(kind), j])
            configs.append(_kind_process(_base_world(base, kind, j, rng), rng))
    return configs
