"""The ``bayestwin`` command, invoked through ``main([...])``."""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import BRAND, make_settings, truth_model

from bayestwin.cli import main
from bayestwin.cli.text import simulation_text
from bayestwin.core.outcomes import outcome_from_frame
from bayestwin.demo import _demo_row, demo_text
from bayestwin.schemas import SampleSizeReport, SimulationResult
from bayestwin.service import TwinService
from bayestwin.synthetic import SyntheticTwinData, generate_synthetic_twin_data


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with an active hcp model (ground-truth posterior, no sampling)."""
    path = tmp_path_factory.mktemp("cli")
    with TwinService(make_settings(path), registry=None) as service:
        service.register(truth_model("hcp")[1])
    return path


@pytest.fixture(scope="module")
def syn() -> SyntheticTwinData:
    return truth_model("hcp")[0]


def test_help_and_usage_errors() -> None:
    code, _, _ = run("--help")
    assert code == 0
    code, _, _ = run("simulate", "--brand", "B")  # missing required options
    assert code == 2
    code, _, _ = run("simulate", "--brand", "B", "--twin-type", "dog", "--intervention", "x")
    assert code == 2


def test_db_upgrade_applies_each_migration_once(tmp_path: Path) -> None:
    code, out, _ = run("db", "upgrade", "--data-dir", str(tmp_path), "--json")
    applied = [
        "011_digital_twin_tables.sql",
        "012_simulation_workers.sql",
        "013_model_rehearsal.sql",
    ]
    assert code == 0 and json.loads(out)["applied"] == applied
    assert (tmp_path / "bayestwin.db").exists()
    code, out, _ = run("db", "upgrade", "--data-dir", str(tmp_path))
    assert code == 0 and "up to date (nothing to apply)" in out


def test_simulate_show_list_and_validate(data_dir: Path, syn: SyntheticTwinData) -> None:
    d = ("--data-dir", str(data_dir))
    code, out, err = run(
        "simulate",
        *d,
        "--brand",
        BRAND,
        "--twin-type",
        "hcp",
        "--intervention",
        "email_campaign",
        "--target",
        "segment=cardiology,oncology",
        "--twins",
        "3000",
        "--seed",
        "5",
        "--json",
    )
    assert code == 0, err
    sim = json.loads(out)
    assert sim["simulation_status"] == "completed"
    assert sim["ate_draws"] is None and sim["twin_unit_ids"] is None
    sim_id = sim["simulation_id"]

    code, out, _ = run(
        "simulate",
        *d,
        "--brand",
        BRAND,
        "--twin-type",
        "hcp",
        "--intervention",
        "call_frequency",
        "--target-range",
        "patient_volume=10:",
        "--intensity",
        "2",
    )
    assert code == 0
    assert "recommendation:" in out and "ATE" in out and "sample size per arm" in out
    assert "10000 twins" in out  # no --twins: the setting default_twin_count

    code, out, _ = run("simulations", *d)
    assert code == 0 and sim_id in out and "2 of 2" in out
    code, out, _ = run("simulations", sim_id, *d)
    assert code == 0 and "email_campaign" in out
    code, out, _ = run("simulations", *d, "--status", "completed", "--json", "--limit", "1")
    page = json.loads(out)
    assert page["total"] == 2 and len(page["items"]) == 1

    frame = syn.truth.run_experiment(syn.population(BRAND), "email_campaign", n_per_arm=1500)
    outcome = outcome_from_frame(frame, "bernoulli").model_dump_json()
    code, out, err = run("register-experiment", "EXP-1", "--outcome", outcome, *d)
    assert code == 0, err
    code, out, _ = run("validate", sim_id, "--experiment-id", "EXP-1", *d)
    assert code == 0 and "grade" in out

    csv = data_dir / "exp.csv"
    frame.to_csv(csv, index=False)
    code, out, err = run(
        "validate", sim_id, "--experiment-id", "EXP-2", "--experiment-csv", str(csv), "--json",
        "--replace", *d,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["actual_experiment_id"] == "EXP-2"

    code, out, _ = run("models", *d)
    assert code == 0 and "bayestwin-kisqali-hcp" in out and "1 of 1" in out
    code, out, _ = run("models", *d, "--active", "--json")
    (model,) = json.loads(out)["items"]
    code, out, _ = run("activate", model["model_id"], *d)
    assert code == 0 and "active" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["simulate", "--brand", "Nope", "--twin-type", "hcp", "--intervention", "x"],
            "no active model|not found",
        ),
        (
            ["simulate", "--brand", BRAND, "--twin-type", "hcp", "--intervention", "telepathy"],
            "intervention_type",
        ),
        (
            [
                "simulate",
                "--brand",
                BRAND,
                "--twin-type",
                "hcp",
                "--intervention",
                "email_campaign",
                "--twins",
                "999999",
            ],
            "twin_count",
        ),
        (
            [
                "simulate",
                "--brand",
                BRAND,
                "--twin-type",
                "hcp",
                "--intervention",
                "email_campaign",
                "--confidence",
                "2",
            ],
            "confidence_level",
        ),
        (
            [
                "simulate",
                "--brand",
                BRAND,
                "--twin-type",
                "hcp",
                "--intervention",
                "email_campaign",
                "--target",
                "segment",
            ],
            "COLUMN=value1",
        ),
        (
            [
                "simulate",
                "--brand",
                BRAND,
                "--twin-type",
                "hcp",
                "--intervention",
                "email_campaign",
                "--config-json",
                "{not json",
            ],
            "not valid JSON",
        ),
        (["simulations", str(uuid.UUID(int=3))], "not found"),
        (["simulations", "not-a-uuid"], "must be a UUID"),
        (["validate", str(uuid.UUID(int=3)), "--experiment-id", "E"], "not found"),
        (["activate", str(uuid.UUID(int=3))], "not found"),
        (["fit", "no-such-file.parquet", "--twin-type", "hcp", "--brand", "B"], "does not exist"),
        (["register-experiment", "E", "--outcome", '{"actual_ate": 1}'], "n_treatment"),
    ],
)
def test_user_errors_exit_2_without_traceback(data_dir: Path, argv: list[str], needle: str) -> None:
    code, out, err = run(*argv, "--data-dir", str(data_dir))
    assert code == 2
    assert "Traceback" not in err and err.startswith("bayestwin: error:")
    assert re.search(needle, err, re.IGNORECASE), err


def test_json_errors(data_dir: Path) -> None:
    code, out, _ = run("simulations", str(uuid.UUID(int=4)), "--json", "--data-dir", str(data_dir))
    assert code == 2
    error = json.loads(out)["error"]
    assert error["type"] == "NotFoundError" and error["kind"] == "not_found"
    assert error["field"] == "simulation_id"


def test_bad_config_is_a_user_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("digital_twin:\n  min_effect_treshold: 0.1\n")
    code, _, err = run("models", "--config", str(cfg), "--data-dir", str(tmp_path))
    assert code == 2 and "min_effect_threshold" in err  # the did-you-mean hint


def test_serve_builds_the_app(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    code, _, err = run("serve", "--port", "8123", "--data-dir", str(data_dir))
    assert code == 0 and "8123" in err
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"


@pytest.mark.slow
def test_fit_from_a_history_file(tmp_path: Path) -> None:
    data = generate_synthetic_twin_data(
        "patient",
        n_units=150,
        n_periods=3,
        brands=("Fabhalta",),
        n_segments=3,
        n_numeric=2,
        n_categorical=1,
    ).data
    path = tmp_path / "history.parquet"
    data.to_parquet(path)
    code, out, err = run(
        "fit",
        str(path),
        "--twin-type",
        "patient",
        "--brand",
        "Fabhalta",
        "--draws",
        "100",
        "--tune",
        "100",
        "--chains",
        "2",
        "--override-diagnostics",
        "--json",
        "--data-dir",
        str(tmp_path),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["is_active"] and info["twin_type"] == "patient"
    assert info["target_columns"] == ["outcome"]


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    code, out, err = run("demo", "--quick", "--json", "--data-dir", str(tmp_path))
    assert code == 0, err
    report = json.loads(out)
    assert [b["twin_type"] for b in report["twin_types"]] == ["hcp", "patient", "territory"]
    for block in report["twin_types"]:
        assert len(block["simulations"]) == 3
        for entry in block["simulations"]:
            sim = entry["simulation"]
            assert sim["simulation_status"] == "completed"
            assert sim["recommendation"] in ("deploy", "skip", "refine")
            assert entry["validation"]["fidelity_grade"] in ("excellent", "good", "fair", "poor")
        assert block["fidelity"]["n_validations"] == 3
    for step in ("[1/3 hcp] fitting", "[3/3 territory]"):
        assert step in err
    text = demo_text(report)
    for word in (
        "HCP twins",
        "PATIENT twins",
        "TERRITORY twins",
        "simulated ATE",
        "grade",
        "n/arm classic / assurance / cov-adj",
        "model fidelity score",
    ):
        assert word in text


def _sized_result(eligible: int) -> SimulationResult:
    report = SampleSizeReport(
        alpha=0.05,
        power=0.8,
        classic_n_per_arm=600,
        assurance_n_per_arm=900,
        covariate_adjusted_n_per_arm=450,
        eligible_population=eligible,
        population_sufficient=eligible >= 1200,
    )
    return SimulationResult(
        brand=BRAND,
        twin_type="hcp",
        intervention_type="email_campaign",
        twin_count=500,
        simulation_status="completed",
        simulated_ate=0.05,
        simulated_ci_lower=0.01,
        simulated_ci_upper=0.09,
        recommendation="refine" if eligible < 1200 else "deploy",
        recommended_sample_size=1200,
        sample_size=report,
        eligible_population=eligible,
        population_sufficient=eligible >= 1200,
    )


def test_text_shows_the_real_need_and_marks_a_short_population() -> None:
    short, enough = _sized_result(1000), _sized_result(5000)
    text = simulation_text(short)
    assert "classic 600" in text and "eligible 1000; SHORT: the classic test needs 1200" in text
    assert "SHORT" not in simulation_text(enough) and "eligible 5000)" in simulation_text(enough)

    def row(sim: SimulationResult) -> str:
        entry = {
            "simulation": sim.model_dump(mode="json"),
            "true_ate": 0.05,
            "experiment": {"actual_ate": 0.04, "actual_se": 0.01, "n_treatment": 100},
            "validation": {"fidelity_grade": "good"},
        }
        return _demo_row(entry)[6]

    assert row(short) == "600 / 900 / 450 (short: 1000 eligible)"
    assert row(enough) == "600 / 900 / 450"
