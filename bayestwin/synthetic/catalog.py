"""The per-twin-type tables of the synthetic histories: names, scales and defaults.

Declarative data only: segment, intervention and feature names of each twin type, the
location and scale of the numeric features, the categorical levels, and the defaults
per outcome family (baseline on the link scale, mean effects, dispersion).
"""

from __future__ import annotations

from bayestwin.core.families import Family
from bayestwin.vocabulary import TwinType

__all__ = [
    "BASELINE",
    "CATEGORICAL",
    "DEFAULT_DISPERSION",
    "DEFAULT_EFFECTS",
    "DEFAULT_FAMILY",
    "GAUSSIAN_SCALE",
    "INTENSITY_GRID",
    "INTERVENTIONS",
    "NUMERIC",
    "SEGMENTS",
]

#: Outcome family of each twin type when none is given.
DEFAULT_FAMILY: dict[TwinType, Family] = {
    TwinType.HCP: "bernoulli",
    TwinType.PATIENT: "poisson",
    TwinType.TERRITORY: "gaussian",
}

#: Intervention types of each twin type, in order (the first ``n`` are used).
INTERVENTIONS: dict[TwinType, tuple[str, ...]] = {
    TwinType.HCP: ("email_campaign", "call_frequency", "speaker_program", "sample_drop"),
    TwinType.PATIENT: ("adherence_reminder", "copay_assistance", "nurse_outreach", "app_coaching"),
    TwinType.TERRITORY: ("digital_campaign", "rep_visit_increase", "local_event", "kol_program"),
}

#: Segment names of each twin type (specialties, cohorts or regions).
SEGMENTS: dict[TwinType, tuple[str, ...]] = {
    TwinType.HCP: (
        "cardiology",
        "oncology",
        "primary_care",
        "neurology",
        "endocrinology",
        "rheumatology",
        "dermatology",
        "psychiatry",
        "pulmonology",
        "nephrology",
        "gastroenterology",
        "urology",
    ),
    TwinType.PATIENT: (
        "newly_diagnosed",
        "stable_maintenance",
        "switcher",
        "lapsed",
        "high_risk",
        "elderly",
        "pediatric",
        "comorbid",
        "rural",
        "specialty_care",
        "treatment_naive",
        "refractory",
    ),
    TwinType.TERRITORY: (
        "northeast",
        "southeast",
        "midwest",
        "southwest",
        "west",
        "northwest",
        "mountain",
        "gulf",
        "mid_atlantic",
        "great_lakes",
        "plains",
        "pacific",
    ),
}

#: ``(name, location, scale)`` of the numeric features, per twin type.
NUMERIC: dict[TwinType, tuple[tuple[str, float, float], ...]] = {
    TwinType.HCP: (
        ("years_in_practice", 18.0, 8.0),
        ("patient_volume", 120.0, 35.0),
        ("digital_engagement", 0.5, 0.2),
        ("prior_rx_rate", 0.3, 0.1),
        ("call_history", 6.0, 2.5),
        ("sample_requests", 4.0, 1.5),
        ("formulary_access", 0.6, 0.15),
        ("peer_influence", 0.0, 1.0),
    ),
    TwinType.PATIENT: (
        ("age", 58.0, 13.0),
        ("comorbidity_index", 2.0, 1.2),
        ("prior_adherence", 0.7, 0.15),
        ("visits_last_year", 5.0, 2.0),
        ("out_of_pocket_cost", 40.0, 15.0),
        ("disease_severity", 0.0, 1.0),
        ("days_since_diagnosis", 700.0, 300.0),
        ("refill_gap_days", 8.0, 4.0),
    ),
    TwinType.TERRITORY: (
        ("population_density", 800.0, 300.0),
        ("market_potential", 1.0, 0.3),
        ("competitor_share", 0.4, 0.1),
        ("rep_coverage", 0.8, 0.1),
        ("payer_mix_commercial", 0.55, 0.1),
        ("historical_growth", 0.02, 0.03),
        ("account_count", 60.0, 20.0),
        ("access_score", 0.0, 1.0),
    ),
}

#: ``(name, levels)`` of the categorical features, per twin type.
CATEGORICAL: dict[TwinType, tuple[tuple[str, tuple[str, ...]], ...]] = {
    TwinType.HCP: (
        ("practice_setting", ("private", "clinic", "hospital")),
        ("region", ("north", "south", "east", "west")),
    ),
    TwinType.PATIENT: (
        ("insurance_type", ("commercial", "medicare", "medicaid")),
        ("channel", ("retail", "mail", "specialty")),
    ),
    TwinType.TERRITORY: (
        ("urbanicity", ("urban", "suburban", "rural")),
        ("market_access", ("open", "restricted", "mixed")),
    ),
}

#: Intercept on the link scale (gaussian: times the outcome scale), per family.
BASELINE: dict[str, float] = {
    "bernoulli": -1.4,  # ~ 20% base rate
    "poisson": 1.0,  # ~ 2.7 events per period
    "neg_binomial": 1.0,
    "gaussian": 1.0,  # times the outcome scale
}

#: Default mean intervention effects on the link scale (per intervention type).
DEFAULT_EFFECTS: dict[str, tuple[float, ...]] = {
    "bernoulli": (0.35, 0.20, 0.08, 0.0),
    "poisson": (0.15, 0.08, 0.03, 0.0),
    "neg_binomial": (0.15, 0.08, 0.03, 0.0),
    "gaussian": (0.12, 0.06, 0.02, 0.0),
}

#: Default dispersion: ``alpha`` for neg_binomial, ``sigma`` (share of the scale) for gaussian.
DEFAULT_DISPERSION: dict[str, float] = {"neg_binomial": 5.0, "gaussian": 0.25}

#: Outcome scale of the gaussian histories.
GAUSSIAN_SCALE = 100.0

#: Intensities a treated unit of the history receives (uniformly).
INTENSITY_GRID: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
