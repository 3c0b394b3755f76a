"""The enums of bayestwin.vocabulary equal config/domain_vocabulary.yaml (spec section 4)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import pytest
import yaml

from bayestwin.resources import resource_path
from bayestwin.vocabulary import (
    VOCABULARY,
    FidelityGrade,
    Recommendation,
    SimulationStatus,
    TwinType,
)

# Spec section 4, in the spec's order.
SPEC_ENUMS: dict[str, list[str]] = {
    "twin_types": ["hcp", "patient", "territory"],
    "simulation_statuses": ["pending", "running", "completed", "failed"],
    "simulation_recommendations": ["deploy", "skip", "refine"],
    "fidelity_grades": ["excellent", "good", "fair", "poor", "unvalidated"],
}


@pytest.fixture(scope="module")
def vocabulary_yaml(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "config" / "domain_vocabulary.yaml").read_text())


def test_yaml_version_is_3_2_0(vocabulary_yaml: dict) -> None:
    assert vocabulary_yaml["version"] == "3.2.0"


def test_yaml_lists_are_the_spec_lists(vocabulary_yaml: dict) -> None:
    lists = {k: v for k, v in vocabulary_yaml.items() if k != "version"}
    assert lists == SPEC_ENUMS


@pytest.mark.parametrize(
    ("key", "enum"),
    [
        ("twin_types", TwinType),
        ("simulation_statuses", SimulationStatus),
        ("simulation_recommendations", Recommendation),
        ("fidelity_grades", FidelityGrade),
    ],
)
def test_enum_equals_yaml_list_in_order(
    vocabulary_yaml: dict, key: str, enum: type[StrEnum]
) -> None:
    assert [member.value for member in enum] == vocabulary_yaml[key]
    assert VOCABULARY[key] is enum


def test_vocabulary_mapping_covers_every_yaml_list(vocabulary_yaml: dict) -> None:
    assert set(VOCABULARY) == set(vocabulary_yaml) - {"version"}


@pytest.mark.parametrize("enum", list(VOCABULARY.values()), ids=list(VOCABULARY))
def test_member_names_are_their_values_in_capitals(enum: type[StrEnum]) -> None:
    assert [member.name for member in enum] == [member.value.upper() for member in enum]


def test_shipped_vocabulary_file_is_found() -> None:
    data = yaml.safe_load(resource_path("config", "domain_vocabulary.yaml").read_text())
    assert [t.value for t in TwinType] == data["twin_types"]
