"""``fit_all``: one model per (brand, twin type) of a history, here or on a Dask cluster.

:class:`FitAllMixin` plans the pairs of a history (its twin types, each with the spec
:func:`~bayestwin.service.fitting.history_spec` gives it, and their brands), skips the
pairs whose active model is already this fit, and fits the rest in this process or as
one task per pair on a Dask cluster (:mod:`bayestwin.service.distributed`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from bayestwin.cluster import DEFAULT_RETRIES, TaskResult, dashboard_link, open_client, run_tasks
from bayestwin.errors import InvalidInputError
from bayestwin.model.fit import fit_all as fit_each
from bayestwin.model.spec import TwinModelSpec, default_spec
from bayestwin.service.comparisons import checks_for_service
from bayestwin.service.distributed import (
    FIT_KEY,
    FitAllResult,
    FitOptions,
    FitOutcome,
    FitTarget,
    ServiceState,
    active_with_key,
    fit_key,
    fit_task,
    on_done,
)
from bayestwin.service.fitting import FittingMixin, history_spec, resolve_family
from bayestwin.service.histories import history_combinations, parquet_features, read_history
from bayestwin.vocabulary import TwinType

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["FitAllMixin"]


class FitAllMixin(FittingMixin):
    """Fit every (brand, twin type) of a history (see :class:`~bayestwin.service.TwinService`)."""

    def fit_all(
        self,
        history: pd.DataFrame | str | os.PathLike[str],
        *,
        family: str | None = None,
        numeric_features: Sequence[str] | None = None,
        categorical_features: Sequence[str] | None = None,
        sampler: Mapping[str, Any] | None = None,
        activate: bool = True,
        override_diagnostics: bool = False,
        engine: Literal["auto", "in_process", "dask"] = "auto",
        scheduler: str | None = None,
        client: Client | None = None,
        workers: int | None = None,
        refit: bool = False,
        retries: int = DEFAULT_RETRIES,
        progress: Callable[[int, int, FitOutcome], None] | None = None,
        dashboard: Callable[[str | None], None] | None = None,
    ) -> FitAllResult:
        """Fit and register one model per (brand, twin type) found in a history.

        A pair whose active model is already this fit (same spec, cores aside, and same
        rows: :func:`~bayestwin.service.distributed.fit_key`) is skipped, unless
        ``refit``; so a call repeated after a partial failure fits only what is missing.

        Parameters
        ----------
        history : DataFrame or path-like
            As in :meth:`fit_history`, with several brands and twin types; or a parquet
            history (file or folder), read by columns and by (brand, twin type)
            (:mod:`bayestwin.service.histories`). On a cluster every worker reads its
            own pair, so the path must be reachable from the workers.
        family, numeric_features, categorical_features, sampler
            As in :meth:`fit_history`, for every twin type (features are inferred per
            twin type when both lists are None).
        activate, override_diagnostics
            As in :meth:`fit`, for every model.
        engine : {"auto", "in_process", "dask"}
            ``"in_process"`` fits the pairs one after the other here (the first failure
            raises); ``"dask"`` runs one task per pair on a Dask cluster
            (:mod:`bayestwin.service.distributed`): the workers register into this
            service's database, model directory and MLflow store, a failed pair is
            recorded with its error and the others go on. ``"auto"``: ``"dask"`` when
            a ``client``, a ``scheduler`` or the setting ``dask_scheduler`` is given,
            else ``"in_process"``.
        scheduler : str, optional
            With ``"dask"``: the scheduler's address (default the setting
            ``dask_scheduler``); when neither is set an embedded ``LocalCluster`` of
            ``workers`` processes (default: one per core), one thread each, runs the
            call and is closed after it.
        client : distributed.Client, optional
            With ``"dask"``: a client to run on (it stays open); wins over ``scheduler``.
        workers : int, optional
            Worker processes of an embedded ``LocalCluster``.
        refit : bool
            Fit every pair, even one whose active model is already this fit.
        retries : int
            With ``"dask"``: extra attempts of a task that raises an unexpected error
            (a worker that dies under a task is the scheduler's to reschedule).
        progress : callable, optional
            Called as ``progress(done, total, outcome)`` after each pair.
        dashboard : callable, optional
            With ``"dask"``: called once with the cluster dashboard's address (None
            when it serves none), before the tasks start.

        Returns
        -------
        FitAllResult
            The registered (or kept) rows, by brand and twin type; its ``outcomes``
            hold one :class:`~bayestwin.service.distributed.FitOutcome` per pair,
            failures included.

        Raises
        ------
        InvalidInputError
            If the history lacks the twin type column, the settings or spec are wrong,
            or (``"dask"``) the database lives in this process only.
        UnavailableError
            ``"dask"`` without dask.distributed, or when no scheduler answers.
        """
        if engine not in ("auto", "in_process", "dask"):
            raise InvalidInputError(
                f"engine must be 'auto', 'in_process' or 'dask', got {engine!r}", field="engine"
            )
        address = scheduler or self.settings.dask_scheduler
        if engine == "auto":
            engine = "dask" if (client is not None or address) else "in_process"
        plan = _plan(history, family, numeric_features, categorical_features, sampler)
        total = sum(len(brands) for _, _, brands in plan)
        report = on_done(progress, total)
        if engine == "in_process":
            return self._fit_here(history, plan, activate, override_diagnostics, refit, report)
        if client is not None:
            return self._fit_on(
                client,
                history,
                plan,
                activate,
                override_diagnostics,
                refit,
                retries,
                report,
                dashboard,
            )
        with open_client(address, n_workers=workers) as own:
            return self._fit_on(
                own,
                history,
                plan,
                activate,
                override_diagnostics,
                refit,
                retries,
                report,
                dashboard,
            )

    def _fit_here(
        self,
        history: pd.DataFrame | str | os.PathLike[str],
        plan: list[_TypePlan],
        activate: bool,
        override_diagnostics: bool,
        refit: bool,
        report: Callable[[FitOutcome], None],
    ) -> FitAllResult:
        """Fit the plan's pairs in this process, one twin type at a time."""
        outcomes: list[FitOutcome] = []
        for kind, spec, brands in plan:
            part = _type_rows(history, spec, kind)
            names = part[spec.brand_column].astype(str)
            todo: dict[str, str] = {}
            for brand in brands:
                key = fit_key(part[names == brand], spec.model_copy(update={"brand": brand}))
                found = None if refit else active_with_key(self.repository, brand, kind, key)
                if found is not None:
                    outcomes.append(FitOutcome(brand, kind, "skipped", found))
                    report(outcomes[-1])
                else:
                    todo[brand] = key
            if not todo:
                continue
            rows = part if len(todo) == len(brands) else part[names.isin(list(todo))]
            fitted = fit_each(rows, base=spec, override_diagnostics=override_diagnostics)
            for (brand, twin_type), model in sorted(fitted.items()):
                if brand in todo:
                    model = dataclasses.replace(
                        model, provenance={**model.provenance, FIT_KEY: todo[brand]}
                    )
                model = checks_for_service(self, model, rows)
                info = self.register(
                    model, activate=activate, override_diagnostics=override_diagnostics
                )
                outcomes.append(FitOutcome(brand, twin_type, "fitted", info))
                report(outcomes[-1])
        return FitAllResult(outcomes)

    def _fit_on(
        self,
        client: Client,
        history: pd.DataFrame | str | os.PathLike[str],
        plan: list[_TypePlan],
        activate: bool,
        override_diagnostics: bool,
        refit: bool,
        retries: int,
        report: Callable[[FitOutcome], None],
        dashboard: Callable[[str | None], None] | None,
    ) -> FitAllResult:
        """Fit the plan's pairs as Dask tasks, one per (brand, twin type)."""
        if dashboard is not None:
            dashboard(dashboard_link(client))
        state = ServiceState.of(self)
        options = FitOptions(
            run=uuid.uuid4().hex,
            activate=activate,
            override_diagnostics=override_diagnostics,
            refit=refit,
        )
        source: Any = history
        if not isinstance(history, pd.DataFrame) and "://" not in os.fspath(history):
            source = str(Path(history).resolve())
        outcomes: list[FitOutcome] = []
        calls: dict[str, tuple[Any, ...]] = {}
        pairs: dict[str, tuple[str, TwinType]] = {}
        for kind, spec, brands in plan:
            part = _type_rows(history, spec, kind) if isinstance(history, pd.DataFrame) else None
            for brand in brands:
                target = FitTarget(brand, kind, spec.model_copy(update={"brand": brand}))
                data: Any = source
                if part is not None:
                    rows = part[part[spec.brand_column].astype(str) == brand]
                    key = fit_key(rows, target.spec)
                    target = dataclasses.replace(target, key=key)
                    found = None if refit else active_with_key(self.repository, brand, kind, key)
                    if found is not None:
                        outcomes.append(FitOutcome(brand, kind, "skipped", found))
                        report(outcomes[-1])
                        continue
                    # the rows travel with the task (not scattered to one worker), so that
                    # the scheduler still has them to rerun it when its worker dies
                    data = rows
                name = f"{len(calls)}-{_TASK_NAME.sub('_', brand)}-{kind.value}"
                calls[name] = (state, data, target, options)
                pairs[name] = (brand, kind)

        def on_result(result: TaskResult[FitOutcome]) -> None:
            if result.ok and result.value is not None:
                outcome = dataclasses.replace(result.value, worker=result.worker)
            else:
                outcome = FitOutcome(*pairs[result.name], "failed", error=result.error)
            outcomes.append(outcome)
            report(outcome)

        registry = getattr(self, "_registry", None)
        if calls and registry is not None:
            registry.prepare()
        run_tasks(client, fit_task, calls, retries=retries, on_result=on_result, prefix="fit")
        return FitAllResult(outcomes)


_TASK_NAME = re.compile(r"[^\w.]+")


_TypePlan = tuple[TwinType, TwinModelSpec, list[str]]


def _plan(
    history: pd.DataFrame | str | os.PathLike[str],
    family: str | None,
    numeric_features: Sequence[str] | None,
    categorical_features: Sequence[str] | None,
    sampler: Mapping[str, Any] | None,
) -> list[_TypePlan]:
    """Per twin type of a history: its spec (for any brand) and its brands, sorted."""
    base = default_spec(TwinType.HCP, "(any)", family="bernoulli", numeric_features=())
    column = base.twin_type_column or "twin_type"
    given = {"numeric_features": numeric_features, "categorical_features": categorical_features}
    plan: list[_TypePlan] = []
    if isinstance(history, pd.DataFrame):
        if column not in history.columns:
            raise InvalidInputError(f"history lacks the column {column!r}", field=column)
        if base.brand_column not in history.columns:
            raise InvalidInputError(
                f"history lacks the column {base.brand_column!r}", field=base.brand_column
            )
        types = history[column].astype(str)
        for kind in sorted({TwinType(t) for t in types.unique()}):
            part = history[types == kind.value]
            spec = history_spec(
                part, brand="(any)", twin_type=kind, family=family, sampler=sampler, **given
            )
            plan.append((kind, spec, sorted(part[base.brand_column].astype(str).unique())))
        return plan
    combos = history_combinations(history, base.brand_column, column)
    for kind in sorted({k for _, k in combos}):
        features = dict(given)
        if numeric_features is None and categorical_features is None:
            kind_base = default_spec(
                kind, "(any)", family=resolve_family(family, kind), numeric_features=()
            )
            numeric, categorical = parquet_features(history, kind_base, kind)
            features = {"numeric_features": numeric, "categorical_features": categorical}
        spec = history_spec(
            pd.DataFrame(),
            brand="(any)",
            twin_type=kind,
            family=family,
            sampler=sampler,
            **features,
        )
        plan.append((kind, spec, [b for b, k in combos if k == kind]))
    return plan


def _type_rows(
    history: pd.DataFrame | str | os.PathLike[str], spec: TwinModelSpec, kind: TwinType
) -> pd.DataFrame:
    """The rows of one twin type: from the frame, or read from parquet (spec's columns)."""
    if not isinstance(history, pd.DataFrame):
        return read_history(history, spec, twin_type=kind)
    column = spec.twin_type_column or "twin_type"
    return history[history[column].astype(str) == kind.value]
