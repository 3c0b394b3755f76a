"""Helpers shared by several test modules (a plain module, not a test module).

``truth_model`` builds a fitted-model stand-in whose "posterior" is centred on the
synthetic ground truth, so the service and its faces can be tested without sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayestwin.model.fitted import Diagnostics, FittedTwinModel
from bayestwin.model.spec import default_spec
from bayestwin.settings import Settings, load_settings
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data, truth_posterior
from bayestwin.vocabulary import TwinType

BRAND = "Kisqali"
PASSED = Diagnostics(1.0, 1000.0, 1000.0, 0, 1.0, True, [])
FAILED = Diagnostics(1.2, 40.0, 30.0, 3, 0.2, False, ["max r_hat 1.2000 > 1.01"])


def truth_model(
    twin_type: str = "hcp",
    brand: str = BRAND,
    *,
    seed: int = 0,
    n_units: int = 400,
    effect_means: dict[str, float] | None = None,
    effect_sd: float = 0.05,
    diagnostics: Diagnostics = PASSED,
) -> tuple[SyntheticTwinData, FittedTwinModel]:
    """A fitted-model stand-in whose posterior is centred on the synthetic truth."""
    syn = generate_synthetic_twin_data(
        twin_type,
        n_units=n_units,
        n_periods=1,
        brands=(brand,),
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
        n_intervention_types=4,
        effect_means=effect_means,
        random_seed=seed,
    )
    spec = default_spec(
        twin_type,
        brand,
        family=syn.truth.family,
        numeric_features=syn.numeric_features,
        categorical_features=syn.categorical_features,
    )
    posterior = truth_posterior(
        syn.truth, brand, n_draws=200, effect_sd=effect_sd, random_seed=seed
    )
    model = FittedTwinModel(
        brand=brand,
        twin_type=TwinType(twin_type),
        posterior=posterior,
        population=syn.population(brand),
        diagnostics=diagnostics,
        spec_hash=spec.spec_hash(),
        spec=spec.model_dump(mode="json"),
        provenance={"fit_seconds": 0.0},
    )
    return syn, model


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings with no environment, the data in ``data_dir`` and ``overrides``."""
    return load_settings(environ={}, data_dir=data_dir, **overrides)
