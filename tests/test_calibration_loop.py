"""The learning loop in the calibration session: experiments drawn from the truth, rehearsals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bayestwin.calibration import draw_kind_configs
from bayestwin.calibration.kinds import kind_label
from bayestwin.calibration.loop import (
    EXPERIMENT_ID_STRIDE,
    draw_experiments,
    experiment_fields,
    experiment_precision,
    experiment_series,
    rehearsal_agreement,
    with_experiments,
)
from bayestwin.calibration.run import BRAND, _draw_history
from bayestwin.calibration.worlds import RunSettings


def test_with_experiments_copies_each_world_per_k() -> None:
    configs = draw_kind_configs(["time_varying_confounder"], 2, n_units=(300, 300), n_periods=5)
    out = with_experiments(configs, (0, 1, 3))
    assert len(out) == 6
    assert [c.experiments for c in out] == [0, 1, 3, 0, 1, 3]
    first = out[:3]
    assert {c.seed for c in first} == {configs[0].seed}  # the same history for every k
    assert first[0].kind == "time_varying_confounder"
    assert first[2].kind == "time_varying_confounder+k3"
    assert first[2].world_id == configs[0].world_id + 3 * EXPERIMENT_ID_STRIDE
    assert kind_label(first[2].kind).endswith("then 3 real experiments")
    with pytest.raises(ValueError, match="distinct integers"):
        with_experiments(configs, (1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        with_experiments(configs, (-1,))


def test_drawn_experiments_estimate_the_true_ate_of_their_population() -> None:
    """Each experiment's ATE is unbiased for its units' true ATE: over 40 draws, the mean
    z-score is within 4 / sqrt(40) of 0 and their sd within [0.6, 1.5]."""
    config = draw_kind_configs(["staggered"], 1, n_units=(1500, 1500), n_periods=5)[0]
    config = replace(config, family="poisson", twin_type="patient", experiments=1)
    sd = _draw_history(config)
    run = RunSettings(experiment_n_per_arm=300)
    z = []
    for j in range(40):
        exp = draw_experiments(replace(config, seed=config.seed + j), run, sd, BRAND)[0]
        units = sd.population(BRAND).set_index("unit_id").loc[list(exp.unit_ids)].reset_index()
        true = sd.truth.ate(units, exp.intervention_type, run.intensity).ate
        z.append((exp.ate - true) / exp.se)
        assert exp.n_treatment == exp.n_control == 300 and len(set(exp.unit_ids)) == 600
    z_arr = np.asarray(z)
    assert abs(z_arr.mean()) < 4 / np.sqrt(40)
    assert 0.6 < z_arr.std() < 1.5
    three = draw_experiments(replace(config, experiments=3), run, sd, BRAND)
    types = sd.truth.intervention_types
    start = config.primary_type
    assert [e.intervention_type for e in three] == [
        types[(start + j) % len(types)] for j in range(3)
    ]


def test_rehearsal_agreement_pools_and_flags() -> None:
    worlds = pd.DataFrame(
        {
            "world_id": [1, 2, 3, 4],
            "rehearsal_placebos": [8, 8, 8, 0],
            "rehearsal_false_deploys": [0, 2, 0, 0],
            "rehearsal_false_deploy_rate": [0.0, 0.25, 0.0, None],
        }
    )
    effects = pd.DataFrame(
        {
            "world_id": [1, 1, 2, 2, 3, 4],
            "true_lift": [0.0, 0.3, 0.01, -0.1, 0.02, 0.0],
            "twin_decision": ["skip", "deploy", "deploy", "skip", "deploy", "deploy"],
        }
    )
    r = rehearsal_agreement(worlds, effects)
    assert r is not None
    assert r["worlds"] == 3  # world 4 was not rehearsed
    assert (r["placebo"]["count"], r["placebo"]["n"]) == (2, 24)
    # null pairs of the rehearsed worlds: (1, 0.0 skip), (2, 0.01 deploy), (2, -0.1 skip),
    # (3, 0.02 deploy)
    assert (r["real"]["count"], r["real"]["n"]) == (2, 4)
    assert r["worlds_with_real_false_deploys"] == 2
    assert r["flagged"] == 1 and r["flagged_share"] == 0.5  # world 2 flagged, world 3 not
    lo, hi = r["placebo"]["wilson_95"]
    assert lo < 2 / 24 < hi
    assert rehearsal_agreement(worlds.drop(columns="rehearsal_placebos"), effects) is None


def test_experiment_precision_sums_the_tests_of_a_type() -> None:
    assert experiment_precision("A", "A,B,A", "0.1,0.2,0.5") == pytest.approx(100 + 4)
    assert experiment_precision("C", "A,B", "0.1,0.2") == 0.0
    assert experiment_precision("A", "", "") == 0.0
    world = {"experiment_types": "A,B,A", "experiment_ses": "0.1,0.2,0.5"}
    assert experiment_fields("A", world) == {
        "experimented": True,
        "experiment_precision": pytest.approx(104),
    }
    assert experiment_fields("C", world) == {"experimented": False, "experiment_precision": 0.0}
    assert experiment_fields("A", {}) == {"experimented": False, "experiment_precision": 0.0}


def test_experiment_series_gives_the_expected_narrowing_of_tested_types() -> None:
    # one world at k = 0 and k = 3; type A tested twice (se 0.1 and 0.2), B untested
    stride = EXPERIMENT_ID_STRIDE
    effects = pd.DataFrame(
        {
            "world_id": [7, 7, 7 + 3 * stride, 7 + 3 * stride],
            "kind": ["in_model", "in_model", "in_model+k3", "in_model+k3"],
            "intervention_type": ["A", "B", "A", "B"],
            "twin_sd": [0.2, 0.1, 0.1, 0.1],
            "twin_width_0.95": [0.8, 0.4, 0.2, 0.6],
            "twin_hit_0.95": [True, True, True, False],
            "twin_hit_0.8": [True, False, True, False],
            "twin_rel_error": [0.1, 0.2, 0.05, 0.3],
            "experimented": [False, False, True, False],
            "experiment_precision": [0.0, 0.0, 1 / 0.1**2 + 1 / 0.2**2, 0.0],
        }
    )
    series = experiment_series(effects)
    assert series is not None
    k3 = series["in_model"]["3"]
    tested = k3["experimented"]
    assert tested["n"] == 1
    assert tested["median_sd_ratio"] == pytest.approx(0.5)
    assert tested["median_width_ratio"] == pytest.approx(0.25)
    assert k3["median_width_ratio"] == pytest.approx((0.25 + 1.5) / 2)
    assert (
        experiment_series(effects.drop(columns="twin_width_0.95"))["in_model"]["3"][
            "median_width_ratio"
        ]
        is None
    )  # records written before the widths were
    # combining N(., 0.2^2) with precisions 100 and 25: sd = (25 + 125) ** -0.5
    assert tested["median_expected_sd_ratio"] == pytest.approx((150**-0.5) / 0.2)
    # every type: A's expected ratio and B's 1, median of the two
    assert k3["median_expected_sd_ratio"] == pytest.approx(((150**-0.5) / 0.2 + 1.0) / 2)
    assert series["in_model"]["0"]["median_expected_sd_ratio"] == pytest.approx(1.0)
