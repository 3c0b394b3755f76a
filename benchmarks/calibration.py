"""Calibration benchmark: the twin model and its baselines on many synthetic worlds.

Draws ``--worlds`` world configurations (:func:`bayestwin.calibration.draw_world_configs`),
runs each (fit, simulate every intervention type, compare with the ground truth and the
baselines) as one task on a Dask cluster (``--engine dask``, the default: an embedded
``LocalCluster`` of ``--workers`` processes, or the scheduler at ``--scheduler`` or the
setting ``dask_scheduler``), or in a local pool of ``--workers`` processes (``--engine
processes``), and writes under ``--out``: ``calibration.md``,
``calibration.json``, ``worlds.csv``, ``effects.csv``, ``segments.csv`` and the plots
``coverage.png``, ``errors.png`` and ``sbc_ranks.png``.

Run ``python -m benchmarks.calibration --out reports/calibration`` (``nox -s
calibration``). ``--worlds 6 --draws 200 --tune 200`` is a quick look; ``--report-only``
renders the report again from the records already written.

``--kinds`` runs world kinds instead (:mod:`bayestwin.calibration.kinds`; ``all`` or a
comma-separated list), ``--worlds-per-kind`` of each, reported per kind apart, for
example ``--kinds all --worlds-per-kind 30 --units 1000,3000 --periods 8``.
``--experiments 0,1,3`` runs every world once per number of real experiments drawn
from its truth and given to the fit, reported as kinds ``<kind>+k<k>``
(:mod:`bayestwin.calibration.loop`); ``--rehearsal`` rehearses every fit on its history
and reports the placebo false-deploy rate beside the real one.
``--write-every N`` writes the report after every ``N`` worlds, so that a long run can
be read while it goes.

With Dask the run prints the dashboard's address first, and one line per world as it
completes. A world whose worker dies is run again elsewhere; one that still fails is
recorded with its error. Stopping a run (SIGTERM, even to this process alone, or
Ctrl-C) ends its worker processes too (an embedded cluster is closed; the process pool's
workers end with their parent, :mod:`bayestwin.calibration.pool`); the exit status
after SIGTERM is 143.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

    from bayestwin.calibration import CalibrationRun


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.calibration",
        description="Calibrate the twin model on synthetic worlds with known effects.",
    )
    p.add_argument("--out", default="reports/calibration", help="output directory")
    p.add_argument("--worlds", type=int, default=150, help="number of worlds")
    p.add_argument("--confounded-share", type=float, default=0.3, help="share of confounded worlds")
    p.add_argument("--seed", type=int, default=20240, help="seed of the world configurations")
    p.add_argument("--draws", type=int, default=500, help="posterior draws per chain")
    p.add_argument("--tune", type=int, default=500, help="tuning steps per chain")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument(
        "--gate-draws",
        type=int,
        default=0,
        help="refit a fit that misses the gate on ESS or r_hat with the draws per chain "
        "its ESS asks for, up to this many (0: never)",
    )
    p.add_argument(
        "--season-length",
        type=int,
        default=4,
        help="periods per seasonal cycle of the fits of histories longer than that "
        "(0: no seasonal wave)",
    )
    p.add_argument("--twins", type=int, default=2000, help="twins per simulation")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worlds run in parallel: processes of the embedded LocalCluster or of the "
        "process pool (each fit then samples its chains on one core)",
    )
    p.add_argument(
        "--engine",
        choices=("dask", "processes"),
        default="dask",
        help="dask: one task per world on a Dask cluster (default); processes: a local pool",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Dask scheduler, e.g. tcp://host:8786 (default: the setting dask_scheduler; "
        "unset: an embedded LocalCluster of --workers processes)",
    )
    p.add_argument(
        "--units",
        default="2000,6000",
        help="range of units per world, LO,HI (negative binomial: at most 1500)",
    )
    p.add_argument(
        "--periods", type=int, default=12, help="periods per unit (negative binomial: at most 6)"
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument(
        "--kinds",
        default=None,
        help="world kinds instead of --worlds: 'all' or a comma-separated list "
        "(bayestwin.calibration.WORLD_KINDS)",
    )
    p.add_argument("--worlds-per-kind", type=int, default=6, help="worlds of each kind")
    p.add_argument(
        "--write-every",
        type=int,
        default=None,
        help="write the report after every N worlds (partial results of a long run)",
    )
    p.add_argument(
        "--experiments",
        default="0",
        help="numbers of real experiments each world is run with, comma-separated, e.g. "
        "0,1,3 (bayestwin.calibration.loop): the same world once per number",
    )
    p.add_argument(
        "--experiment-n",
        type=int,
        default=400,
        help="units per arm of each real experiment drawn from a world's truth",
    )
    p.add_argument(
        "--rehearsal",
        action="store_true",
        help="rehearse every fit on its history (placebo campaigns) and report the placebo "
        "false-deploy rate beside the real one",
    )
    p.add_argument("--placebos", type=int, default=8, help="placebo types per rehearsal")
    p.add_argument("--first", type=int, default=None, help="run only the first N worlds")
    p.add_argument(
        "--families",
        default=None,
        help="run only the worlds of these outcome families (comma-separated), after drawing",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="render the report again from the records already in --out (no fitting)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibration and write the reports; returns the exit status."""
    args = _parser().parse_args(argv)
    from bayestwin.calibration import (
        RunSettings,
        draw_world_configs,
        read_run,
        run_calibration,
        write_report,
    )

    if args.report_only:
        for path in write_report(read_run(args.out), args.out).values():
            print(f"  {path}")
        return 0

    lo, hi = (int(v) for v in args.units.split(","))
    if args.kinds:
        from bayestwin.calibration import draw_kind_configs, parse_kinds

        configs = draw_kind_configs(
            parse_kinds(args.kinds),
            args.worlds_per_kind,
            random_seed=args.seed,
            n_units=(lo, hi),
            n_periods=args.periods,
        )
    else:
        configs = draw_world_configs(
            args.worlds,
            random_seed=args.seed,
            confounded_share=args.confounded_share,
            n_units=(lo, hi),
            n_periods=args.periods,
        )
    ks = [int(v) for v in args.experiments.split(",") if v.strip()]
    if ks != [0]:
        from bayestwin.calibration.loop import with_experiments

        configs = with_experiments(configs, ks)
    if args.families:
        wanted = {f.strip() for f in args.families.split(",") if f.strip()}
        from bayestwin.core.families import FAMILIES

        known = {c.family for c in configs}
        if not wanted <= set(FAMILIES):
            raise SystemExit(f"--families: {sorted(wanted)}; allowed: {', '.join(FAMILIES)}")
        configs = [c for c in configs if c.family in wanted]
        if not configs:
            raise SystemExit(f"--families: no world of {sorted(wanted)} among {sorted(known)}")
    if args.first is not None:
        configs = configs[: args.first]
    workers = max(1, args.workers)
    run = RunSettings(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        cores=1 if workers > 1 else min(args.chains, os.cpu_count() or 1),
        twin_count=args.twins,
        baselines=not args.no_baselines,
        rehearsal=args.rehearsal,
        placebos=args.placebos,
        experiment_n_per_arm=args.experiment_n,
        gate_draws=args.gate_draws,
        season_length=args.season_length,
    )
    start = time.perf_counter()

    def progress(done: int, total: int, world: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - start
        status = "failed: " + world["error"] if world.get("error") else "ok"
        print(
            f"[{done:>3}/{total}] world {world['world_id']:>4} {world.get('kind', ''):<27} "
            f"{world['family']:<12} {'confounded' if world['confounded'] else 'random':<10} "
            f"{world['seconds']:5.1f} s  {status}  (elapsed {elapsed / 60:.1f} min)",
            flush=True,
        )

    command = " ".join(["python -m benchmarks.calibration", *(argv or sys.argv[1:])])
    chunk = max(1, args.write_every or len(configs))
    result: CalibrationRun | None = None
    with _cluster(args, workers) as client:
        for i in range(0, len(configs), chunk):
            part = run_calibration(
                configs[i : i + chunk],
                run,
                workers=workers,
                progress=progress,
                engine=args.engine,
                client=client,
            )
            result = part if result is None else _merged(result, part)
            result.meta["command"] = command
            result.meta["engine"] = args.engine
            if i + chunk < len(configs):
                write_report(result, args.out)
                print(f"partial report: {len(result.worlds)}/{len(configs)} worlds", flush=True)
    assert result is not None
    files = write_report(result, args.out)
    print(f"wall time {result.wall_seconds / 60:.1f} min; wrote:")
    for path in files.values():
        print(f"  {path}")
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _cluster(args: argparse.Namespace, workers: int) -> Iterator[Client | None]:
    """The Dask client of the run (None with ``--engine processes``), open for every chunk.

    SIGTERM raises ``SystemExit`` meanwhile, so that an embedded cluster is closed (its
    workers ended) on the way out.
    """
    if args.engine != "dask":
        yield None
        return
    from bayestwin.cluster import dashboard_link, open_client
    from bayestwin.settings import load_settings

    scheduler = args.scheduler or load_settings().dask_scheduler
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with open_client(scheduler, n_workers=workers) as client:
            where = dashboard_link(client) or "none (the dashboard needs bokeh)"
            print(f"Dask dashboard: {where}", flush=True)
            print(f"Dask workers: {len(client.nthreads())}", flush=True)
            yield client
    finally:
        signal.signal(signal.SIGTERM, previous)


def _merged(first: CalibrationRun, second: CalibrationRun) -> CalibrationRun:
    """Two runs' records as one run."""
    from dataclasses import replace

    import pandas as pd

    return replace(
        first,
        worlds=pd.concat([first.worlds, second.worlds], ignore_index=True),
        effects=pd.concat([first.effects, second.effects], ignore_index=True),
        segments=pd.concat([first.segments, second.segments], ignore_index=True),
        wall_seconds=first.wall_seconds + second.wall_seconds,
    )


if __name__ == "__main__":
    raise SystemExit(main())
