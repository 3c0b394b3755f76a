"""The versioned migrations, and the SQL files on a real PostgreSQL compared with the ORM.

The PostgreSQL tests need BAYESTWIN_TEST_POSTGRES_URL (e.g.
postgresql+psycopg://postgres@127.0.0.1/test). Every one of them works in its own scratch
database, created from that URL and dropped after. The version-table tests run on SQLite
too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from bayestwin.errors import ConflictError, InvalidInputError
from bayestwin.schemas import FidelityResult, SimulationResult, TwinModelInfo
from bayestwin.store.db import make_engine, temporary_database
from bayestwin.store.migrations import (
    VERSION_TABLE,
    applied_migrations,
    load_migrations,
    migration_files,
    upgrade,
)
from bayestwin.store.repository import TwinRepository
from bayestwin.store.tables import metadata
from bayestwin.vocabulary import FidelityGrade, Recommendation, SimulationStatus, TwinType

PG_URL = os.environ.get("BAYESTWIN_TEST_POSTGRES_URL")

PG = pytest.mark.postgres

EXPERIMENT_FKS = {
    "fk_twin_simulations_experiment_design_id_ml_experiments": (
        "twin_simulations",
        "experiment_design_id",
    ),
    "fk_twin_fidelity_tracking_actual_experiment_id_ml_experiments": (
        "twin_fidelity_tracking",
        "actual_experiment_id",
    ),
}
RUN_FK = "fk_digital_twin_models_mlflow_run_id_ml_experiments"


@pytest.fixture
def scratch_url() -> Iterator[URL]:
    assert PG_URL is not None
    with temporary_database(PG_URL) as url:
        yield url


@pytest.fixture
def engine(scratch_url: URL) -> Iterator[Engine]:
    eng = make_engine(scratch_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=PG)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database: a SQLite file, or a scratch PostgreSQL database."""
    if request.param == "postgresql":
        yield request.getfixturevalue("engine")
        return
    eng = make_engine(f"sqlite:///{tmp_path / 'twins.db'}")
    try:
        yield eng
    finally:
        eng.dispose()


# -- reflection ----------------------------------------------------------------------------


def _type_sql(type_: Any, engine: Engine) -> str:
    return str(type_.compile(dialect=engine.dialect))


def _norm(sql: str | None) -> str | None:
    return None if sql is None else " ".join(str(sql).replace("(", " ").replace(")", " ").split())


def schema_diff(engine: Engine) -> list[str]:
    """Every difference between the database's twin tables and the ORM metadata."""
    insp = sa.inspect(engine)
    problems: list[str] = []
    present = set(insp.get_table_names())
    for name, table in metadata.tables.items():
        if name not in present:
            problems.append(f"table {name} missing")
            continue
        reflected = {c["name"]: c for c in insp.get_columns(name)}
        for col in table.columns:
            got = reflected.pop(col.name, None)
            if got is None:
                problems.append(f"{name}.{col.name}: missing in SQL")
                continue
            want_type, got_type = _type_sql(col.type, engine), _type_sql(got["type"], engine)
            if want_type != got_type:
                problems.append(f"{name}.{col.name}: type {got_type} != ORM {want_type}")
            if bool(got["nullable"]) != bool(col.nullable):
                problems.append(f"{name}.{col.name}: nullable {got['nullable']} != ORM")
            if (got["default"] is None) != (col.server_default is None):
                problems.append(f"{name}.{col.name}: server default {got['default']!r} vs ORM")
        problems += [f"{name}.{c}: column not in ORM" for c in reflected]

        pk = insp.get_pk_constraint(name)
        if pk["name"] != table.primary_key.name or pk["constrained_columns"] != [
            c.name for c in table.primary_key.columns
        ]:
            problems.append(f"{name}: primary key {pk} differs")

        want_fks = {
            fk.name: (
                tuple(fk.column_keys),
                fk.referred_table.name,
                tuple(e.column.name for e in fk.elements),
                fk.ondelete,
            )
            for fk in table.foreign_key_constraints
        }
        got_fks = {
            fk["name"]: (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk["options"].get("ondelete"),
            )
            for fk in insp.get_foreign_keys(name)
            if fk["referred_table"] != "ml_experiments"
        }
        if want_fks != got_fks:
            problems.append(f"{name}: foreign keys {got_fks} != ORM {want_fks}")

        want_uq = {
            c.name: [col.name for col in c.columns]
            for c in table.constraints
            if isinstance(c, sa.UniqueConstraint)
        }
        got_uq = {u["name"]: u["column_names"] for u in insp.get_unique_constraints(name)}
        if want_uq != got_uq:
            problems.append(f"{name}: unique constraints {got_uq} != ORM {want_uq}")

        want_ck = {
            c.name
            for c in table.constraints
            if isinstance(c, sa.CheckConstraint) and not getattr(c, "_type_bound", False)
        }
        got_ck = {c["name"] for c in insp.get_check_constraints(name)}
        if want_ck != got_ck:
            problems.append(f"{name}: checks {sorted(map(str, got_ck ^ want_ck))} differ")

        want_ix = {
            ix.name: (
                [c.name for c in ix.columns],
                bool(ix.unique),
                _norm(ix.dialect_options["postgresql"]["where"]),
            )
            for ix in table.indexes
        }
        got_ix = {
            ix["name"]: (
                ix["column_names"],
                bool(ix["unique"]),
                _norm(ix.get("dialect_options", {}).get("postgresql_where")),
            )
            for ix in insp.get_indexes(name)
            if "duplicates_constraint" not in ix  # the index behind a UNIQUE constraint
        }
        if want_ix != got_ix:
            problems.append(f"{name}: indexes {got_ix} != ORM {want_ix}")
    return problems


def enum_values(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.typname, e.enumlabel FROM pg_type t "
                "JOIN pg_enum e ON e.enumtypid = t.oid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = current_schema() ORDER BY t.typname, e.enumsortorder"
            )
        ).all()
    out: dict[str, list[str]] = {}
    for typname, label in rows:
        out.setdefault(typname, []).append(label)
    return out


def catalog_snapshot(engine: Engine) -> dict[str, Any]:
    insp = sa.inspect(engine)
    snap: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        snap[name] = (
            [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in insp.get_columns(name)
            ],
            sorted((f["name"] or "", str(f)) for f in insp.get_foreign_keys(name)),
            sorted((c["name"] or "", c["sqltext"]) for c in insp.get_check_constraints(name)),
            sorted((i["name"] or "", str(i)) for i in insp.get_indexes(name)),
        )
    snap["enums"] = enum_values(engine)
    return snap


def foreign_keys_to_experiments(engine: Engine) -> dict[str, tuple[str, str, str]]:
    insp = sa.inspect(engine)
    out: dict[str, tuple[str, str, str]] = {}
    for table in metadata.tables:
        for fk in insp.get_foreign_keys(table):
            if fk["referred_table"] == "ml_experiments":
                out[str(fk["name"])] = (
                    table,
                    fk["constrained_columns"][0],
                    fk["referred_columns"][0],
                )
    return out


def column_type(engine: Engine, table: str, column: str) -> str:
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns(table)}
    return _type_sql(cols[column]["type"], engine)


# -- tests ---------------------------------------------------------------------------------


def test_migration_files_are_found() -> None:
    names = [p.name for p in migration_files()]
    assert "011_digital_twin_tables.sql" in names
    assert [(m.version, m.name) for m in load_migrations()][0] == ("011", "digital_twin_tables")


def test_applying_twice_runs_each_migration_once(any_engine: Engine) -> None:
    files = [p.name for p in migration_files()]
    assert applied_migrations(any_engine) == []
    assert upgrade(any_engine) == files
    recorded = applied_migrations(any_engine)
    assert [f"{m.version}_{m.name}.sql" for m in recorded] == files
    assert [m.checksum for m in recorded] == [m.checksum for m in load_migrations()]
    assert upgrade(any_engine) == []  # nothing is run again
    TwinRepository(any_engine)  # neither by a new repository
    assert applied_migrations(any_engine) == recorded
    tables = set(sa.inspect(any_engine).get_table_names())
    assert set(metadata.tables) | {VERSION_TABLE} == tables


def test_a_new_migration_is_applied_alone(any_engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in migration_files():
        (folder / path.name).write_bytes(path.read_bytes())
    assert upgrade(any_engine, migrations_dir=folder) == [p.name for p in migration_files()]
    # Not idempotent: it would fail if it ran a second time.
    (folder / "999_extra.sql").write_text("CREATE TABLE twin_extra (id INTEGER PRIMARY KEY);")
    assert upgrade(any_engine, migrations_dir=folder) == ["999_extra.sql"]
    assert upgrade(any_engine, migrations_dir=folder) == []
    versions = [m.version for m in applied_migrations(any_engine)]
    assert versions == [*(m.version for m in load_migrations()), "999"]
    if any_engine.dialect.name == "postgresql":  # SQLite builds its schema from the ORM
        assert "twin_extra" in sa.inspect(any_engine).get_table_names()


def test_an_edited_applied_migration_is_refused(any_engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    original = migration_files()[0]
    edited = folder / original.name
    edited.write_bytes(original.read_bytes())
    upgrade(any_engine, migrations_dir=folder)
    edited.write_text(original.read_text() + "\n-- an edit\n")
    with pytest.raises(ConflictError, match="changed after it was applied") as err:
        upgrade(any_engine, migrations_dir=folder)
    assert err.value.code == "migration_changed"


@PG
def test_concurrent_upgrades_apply_each_migration_once(scratch_url: URL) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            results.append(upgrade(scratch_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], [p.name for p in migration_files()]]
    assert len(applied_migrations(scratch_url)) == len(migration_files())


@PG
def test_migration_matches_orm_metadata(engine: Engine) -> None:
    assert upgrade(engine) == [p.name for p in migration_files()]
    assert schema_diff(engine) == []
    assert foreign_keys_to_experiments(engine) == {}


@PG
def test_enum_types_hold_the_vocabulary(engine: Engine) -> None:
    upgrade(engine)
    assert enum_values(engine) == {
        "twin_type": [m.value for m in TwinType],
        "simulation_status": [m.value for m in SimulationStatus],
        "simulation_recommendation": [m.value for m in Recommendation],
        "fidelity_grade": [m.value for m in FidelityGrade],
    }
    # The ORM names the same PostgreSQL types with the same values.
    orm_enums = {
        col.type.name: list(col.type.enums)
        for table in metadata.tables.values()
        for col in table.columns
        if isinstance(col.type, sa.Enum)
    }
    assert orm_enums == enum_values(engine)


@PG
def test_applying_twice_changes_nothing(engine: Engine) -> None:
    upgrade(engine)
    before = catalog_snapshot(engine)
    upgrade(engine)
    assert catalog_snapshot(engine) == before
    assert schema_diff(engine) == []


@PG
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_applies_the_file_twice(scratch_url: URL, engine: Engine) -> None:
    libpq_url = scratch_url.set(drivername="postgresql").render_as_string(hide_password=False)
    for _ in range(2):
        for path in migration_files():
            subprocess.run(
                ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url, "-f", str(path)],
                check=True,
                capture_output=True,
            )
    assert schema_diff(engine) == []
    assert schema_diff(engine) == []


@PG
def test_applies_in_its_own_schema_when_types_exist_elsewhere(scratch_url: URL) -> None:
    upgrade(scratch_url)  # types and tables in public
    with sa.create_engine(scratch_url).begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA other")
    other = make_engine(scratch_url, connect_args={"options": "-csearch_path=other"})
    try:
        upgrade(other)
        assert schema_diff(other) == []
        with other.connect() as conn:
            schemas = conn.execute(
                sa.text(
                    "SELECT DISTINCT table_schema FROM information_schema.tables "
                    "WHERE table_name = 'twin_simulations'"
                )
            ).scalars()
            assert sorted(schemas) == ["other", "public"]
    finally:
        other.dispose()


PLATFORM_UUID_KEY = """
CREATE TABLE ml_experiments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    experiment_name VARCHAR(255) NOT NULL,
    mlflow_experiment_id VARCHAR(100) UNIQUE,
    mlflow_run_id VARCHAR(100) UNIQUE
)
"""

PLATFORM_TEXT_KEY = """
CREATE TABLE ml_experiments (
    experiment_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
)
"""


@PG
def test_platform_with_uuid_keyed_experiments_gets_all_references(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(PLATFORM_UUID_KEY)
    upgrade(engine)
    upgrade(engine)  # still safe to run again inside the platform
    assert foreign_keys_to_experiments(engine) == {
        "fk_twin_simulations_experiment_design_id_ml_experiments": (
            "twin_simulations",
            "experiment_design_id",
            "id",
        ),
        "fk_twin_fidelity_tracking_actual_experiment_id_ml_experiments": (
            "twin_fidelity_tracking",
            "actual_experiment_id",
            "id",
        ),
        RUN_FK: ("digital_twin_models", "mlflow_run_id", "mlflow_run_id"),
    }
    for table, column in EXPERIMENT_FKS.values():
        assert column_type(engine, table, column) == "UUID"
    # Apart from those references the schema is still the ORM's.
    assert schema_diff(engine) == [
        "twin_simulations.experiment_design_id: type UUID != ORM VARCHAR(255)",
        "twin_fidelity_tracking.actual_experiment_id: type UUID != ORM VARCHAR(255)",
    ]

    # The repository keeps handling experiment ids as strings on the UUID columns.
    with engine.begin() as conn:
        exp_id = conn.execute(
            sa.text(
                "INSERT INTO ml_experiments (experiment_name, mlflow_run_id) "
                "VALUES ('twin fit', 'run-1') RETURNING id"
            )
        ).scalar_one()
    repo = TwinRepository(engine, ensure_schema=False)
    model = repo.register_model(
        TwinModelInfo(
            model_id=uuid.uuid4(),
            model_name="brandx-hcp",
            twin_type=TwinType.HCP,
            model_version="1",
            mlflow_run_id="run-1",
            brand="brandx",
        ),
        activate=True,
    )
    sim = SimulationResult(
        model_id=model.model_id,
        experiment_design_id=str(exp_id),
        brand="brandx",
        twin_type=TwinType.HCP,
        intervention_type="email",
        twin_count=100,
    )
    repo.create_simulation(sim)
    repo.mark_running(sim.simulation_id)
    repo.complete_simulation(
        sim.model_copy(
            update={"simulated_ate": 0.1, "simulated_ci_lower": 0.0, "simulated_ci_upper": 0.2}
        )
    )
    stored = repo.get_simulation(sim.simulation_id)
    assert stored.experiment_design_id == str(exp_id)
    fid = repo.record_validation(
        FidelityResult(
            simulation_id=sim.simulation_id, actual_experiment_id=str(exp_id), simulated_ate=0.1
        )
    )
    assert repo.get_validation(fid.tracking_id).actual_experiment_id == str(exp_id)

    # An id that is not in ml_experiments is refused by the database.
    bad = sim.model_copy(
        update={"simulation_id": uuid.uuid4(), "experiment_design_id": str(uuid.uuid4())}
    )
    with pytest.raises(InvalidInputError, match="does not exist") as refused:
        repo.create_simulation(bad)
    assert (refused.value.code, refused.value.field) == (
        "invalid_reference",
        "experiment_design_id",
    )
    with pytest.raises(InvalidInputError, match="does not exist"):
        repo.register_model(
            TwinModelInfo(
                model_id=uuid.uuid4(),
                model_name="brandx-hcp",
                twin_type=TwinType.HCP,
                model_version="2",
                mlflow_run_id="no-such-run",
                brand="brandx",
            )
        )

    # Deleting the experiment keeps the twin rows and clears the links.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ml_experiments WHERE id = :id"), {"id": exp_id})
    assert repo.get_simulation(sim.simulation_id).experiment_design_id is None
    assert repo.get_validation(fid.tracking_id).actual_experiment_id is None
    assert repo.get_model(model.model_id).mlflow_run_id is None


@PG
def test_platform_with_text_keyed_experiments_keeps_varchar(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(PLATFORM_TEXT_KEY)
    upgrade(engine)
    upgrade(engine)
    fks = foreign_keys_to_experiments(engine)
    assert set(fks) == set(EXPERIMENT_FKS)
    assert {v[2] for v in fks.values()} == {"experiment_id"}
    assert RUN_FK not in fks  # no unique mlflow_run_id column to point at
    assert schema_diff(engine) == []


@PG
def test_schema_diff_sees_drift(engine: Engine) -> None:
    """The comparison is not vacuous: each kind of drift shows up."""
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE twin_simulations ALTER COLUMN brand TYPE VARCHAR(50)")
        conn.exec_driver_sql(
            "ALTER TABLE twin_simulations ALTER COLUMN execution_time_ms SET NOT NULL"
        )
        conn.exec_driver_sql("ALTER TABLE twin_simulations ADD COLUMN surprise INTEGER")
        conn.exec_driver_sql(
            "ALTER TABLE twin_simulations DROP CONSTRAINT ck_twin_simulations_ci_ordered"
        )
        conn.exec_driver_sql("DROP INDEX ix_twin_simulations_brand")
        conn.exec_driver_sql(
            "ALTER TABLE twin_fidelity_tracking ALTER COLUMN fidelity_grade DROP DEFAULT"
        )
        conn.exec_driver_sql("ALTER TYPE fidelity_grade ADD VALUE 'legendary'")
    diff = "\n".join(schema_diff(engine))
    for needle in (
        "twin_simulations.brand: type VARCHAR(50)",
        "twin_simulations.execution_time_ms: nullable",
        "twin_simulations.surprise: column not in ORM",
        "ck_twin_simulations_ci_ordered",
        "ix_twin_simulations_brand",
        "twin_fidelity_tracking.fidelity_grade: server default",
    ):
        assert needle in diff
    assert enum_values(engine)["fidelity_grade"][-1] == "legendary"
