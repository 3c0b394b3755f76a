"""The command line of the synthetic histories: ``python -m bayestwin.synthetic``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayestwin.core.families import FAMILIES
from bayestwin.synthetic.generate import generate_synthetic_twin_data
from bayestwin.synthetic.truth import SyntheticTwinData
from bayestwin.vocabulary import TwinType

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bayestwin.synthetic",
        description="Draw a synthetic twin history and print its true intervention effects.",
    )
    parser.add_argument("--twin-type", choices=[t.value for t in TwinType], default="hcp")
    parser.add_argument("--family", choices=FAMILIES, default=None)
    parser.add_argument("--n-units", type=int, default=1000, help="units per brand")
    parser.add_argument("--n-per-arm", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _effect_rows(sd: SyntheticTwinData, n_per_arm: int, seed: int) -> list[dict[str, Any]]:
    """True effects and one randomised experiment per brand and intervention type."""
    truth = sd.truth
    rows = []
    for b_i, brand in enumerate(truth.brands):
        units = sd.population(brand)
        for k_i, kind in enumerate(truth.intervention_types):
            effect = truth.ate(units, kind)
            trial = truth.run_experiment(
                units,
                kind,
                n_per_arm=n_per_arm,
                random_seed=np.random.default_rng([seed, b_i, k_i]),
            )
            arm_means = trial.groupby("arm")["outcome"].mean()
            rows.append(
                {
                    "brand": brand,
                    "intervention_type": kind,
                    "control_mean": effect.control_mean,
                    "true_ate": effect.ate,
                    "true_lift": effect.relative,
                    "experiment_ate": arm_means["treatment"] - arm_means["control"],
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Print the true effects of a synthetic history.

    For every brand and intervention type: the true control mean, ATE and lift on the
    brand's units at intensity 1, and the ATE that a randomised experiment run on them
    (``--n-per-arm`` units per arm) observes.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``); ``--help`` lists them.
    """
    args = _parser().parse_args(argv)
    sd = generate_synthetic_twin_data(
        args.twin_type, n_units=args.n_units, family=args.family, random_seed=args.seed
    )
    rows = _effect_rows(sd, args.n_per_arm, args.seed)
    print(
        f"Synthetic {sd.truth.twin_type.value} history: {len(sd.data)} rows, "
        f"{sd.data['unit_id'].nunique()} units, {sd.truth.family} outcome, seed {args.seed}."
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
