"""Fitting: a model spec from a history, a fit, and its registration.

:meth:`FittingMixin.fit` fits a given :class:`~bayestwin.model.spec.TwinModelSpec`;
:meth:`FittingMixin.fit_history` and :meth:`FittingMixin.fit_all` build the default
spec themselves, inferring the features from the history's columns
(:func:`infer_features`), so that the faces need no model class. :meth:`FittingMixin.fit_all`
fits its pairs here or as tasks on a Dask cluster (:mod:`bayestwin.service.distributed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import ValidationError

from bayestwin.core.families import Family, check_family
from bayestwin.errors import InvalidInputError, from_validation_error
from bayestwin.model.fit import TwinGenerator
from bayestwin.model.spec import SamplerSettings, TwinModelSpec, default_spec
from bayestwin.schemas import ExperimentEvidence, TwinModelInfo
from bayestwin.service.comparisons import checks_for_service
from bayestwin.service.distributed import (
    FitAllResult,
    FitOutcome,
)
from bayestwin.service.evidence import EvidenceMixin
from bayestwin.synthetic import DEFAULT_FAMILY
from bayestwin.vocabulary import TwinType

if TYPE_CHECKING:
    pass

__all__ = [
    "FitAllResult",
    "FitOutcome",
    "FittingMixin",
    "history_spec",
    "infer_features",
    "resolve_family",
]


def infer_features(history: pd.DataFrame, spec: TwinModelSpec) -> tuple[list[str], list[str]]:
    """Split a history's feature columns into numeric and categorical ones.

    Every column that the spec does not use for something else (unit, brand, twin
    type, period, segments, intervention, intensity, outcome) is a feature: numeric
    when its dtype is numeric, else categorical. Columns with no value at all (those
    of another twin type in a mixed history) are left out.

    Parameters
    ----------
    history : DataFrame
        The history to fit.
    spec : TwinModelSpec
        Gives the names of the reserved columns.

    Returns
    -------
    tuple of list of str
        ``(numeric_features, categorical_features)``, in column order.
    """
    reserved = {
        spec.outcome,
        spec.unit_column,
        spec.period_column,
        spec.brand_column,
        spec.twin_type_column,
        spec.intervention_column,
        spec.intensity_column,
        *spec.segment_columns,
    }
    features = [str(c) for c in history.columns if c not in reserved and history[c].notna().any()]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(history[c])]
    return numeric, [c for c in features if c not in numeric]


def _sampler(sampler: Mapping[str, Any] | None) -> SamplerSettings:
    try:
        return SamplerSettings(**dict(sampler or {}))
    except ValidationError as exc:
        raise from_validation_error(exc, what="sampler settings") from None


def resolve_family(family: str | None, twin_type: TwinType) -> Family:
    """The outcome family asked for, checked, or the twin type's default (None).

    Parameters
    ----------
    family : str or None
        A family name (:data:`bayestwin.core.families.FAMILIES`), or None.
    twin_type : TwinType
        Whose default family None stands for.
    """
    if family is None:
        return DEFAULT_FAMILY[twin_type]
    try:
        return check_family(family)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field="family") from None


def history_spec(
    history: pd.DataFrame,
    *,
    brand: str,
    twin_type: TwinType | str,
    family: str | None = None,
    numeric_features: Sequence[str] | None = None,
    categorical_features: Sequence[str] | None = None,
    sampler: Mapping[str, Any] | None = None,
) -> TwinModelSpec:
    """Return the default spec of a (brand, twin type) for a history.

    Parameters
    ----------
    history : DataFrame
        The history; its columns give the features when both lists are None.
    brand, twin_type, family, numeric_features, categorical_features, sampler
        As in :meth:`FittingMixin.fit_history`.

    Returns
    -------
    TwinModelSpec
        :func:`bayestwin.model.spec.default_spec` with these fields.

    Raises
    ------
    InvalidInputError
        If the family, the sampler settings or the spec are wrong.
    """
    kind = TwinType(twin_type)
    fam = resolve_family(family, kind)
    settings = _sampler(sampler)
    if numeric_features is None and categorical_features is None:
        base = default_spec(kind, brand, family=fam, numeric_features=())
        numeric, categorical = infer_features(history, base)
    else:
        numeric, categorical = list(numeric_features or ()), list(categorical_features or ())
    try:
        return default_spec(
            kind,
            brand,
            family=fam,
            numeric_features=numeric,
            categorical_features=categorical,
            sampler=settings,
        )
    except ValidationError as exc:
        raise from_validation_error(exc, what="model spec") from None


class FittingMixin(EvidenceMixin):
    """Fit models and register them (see :class:`~bayestwin.service.TwinService`)."""

    def fit(
        self,
        history: pd.DataFrame,
        spec: TwinModelSpec,
        *,
        experiments: Sequence[ExperimentEvidence] | None = None,
        with_experiments: bool = False,
        activate: bool = True,
        override_diagnostics: bool = False,
        model_name: str | None = None,
    ) -> TwinModelInfo:
        """Fit a model on ``history`` and register it (see :meth:`register`).

        Parameters
        ----------
        history : DataFrame
            One row per unit and period (see :class:`~bayestwin.model.spec.TwinModelSpec`).
        spec : TwinModelSpec
            What to fit, with its sampler settings.
        experiments : sequence of ExperimentEvidence, optional
            Real experiments to fit as evidence
            (:mod:`bayestwin.model.experiment_terms`).
        with_experiments : bool
            Add the stored validated experiments of the spec's brand and twin type
            (:meth:`experiments_for`) to ``experiments``. The registered row's
            ``training_config["provenance"]["experiments"]`` says which were used.
        activate : bool
            Make it the active model of its (brand, twin type).
        override_diagnostics : bool
            Let a model that failed the diagnostics gate serve anyway.
        model_name : str, optional
            Registered name (default :meth:`default_model_name`).

        Returns
        -------
        TwinModelInfo
            The registered model row.
        """
        evidence = list(experiments or ())
        if with_experiments:
            given = {e.experiment_id for e in evidence}
            stored = self.experiments_for(spec.brand, spec.twin_type)
            evidence += [e for e in stored if e.experiment_id not in given]
        fitted = TwinGenerator(spec).fit(
            history, experiments=evidence, override_diagnostics=override_diagnostics
        )
        fitted = checks_for_service(self, fitted, history)
        return self.register(
            fitted,
            activate=activate,
            override_diagnostics=override_diagnostics,
            model_name=model_name,
        )

    def fit_history(
        self,
        history: pd.DataFrame,
        *,
        brand: str,
        twin_type: TwinType | str,
        family: str | None = None,
        numeric_features: Sequence[str] | None = None,
        categorical_features: Sequence[str] | None = None,
        sampler: Mapping[str, Any] | None = None,
        experiments: Sequence[ExperimentEvidence] | None = None,
        with_experiments: bool = False,
        activate: bool = True,
        override_diagnostics: bool = False,
        model_name: str | None = None,
    ) -> TwinModelInfo:
        """Fit a (brand, twin type) on a history with the default spec, and register it.

        Parameters
        ----------
        history : DataFrame
            One row per unit and period, with the default column names (``unit_id``,
            ``brand``, ``twin_type``, ``period``, ``segment``, ``intervention_type``,
            ``intensity``, ``outcome``) plus the features.
        brand : str
            The brand to fit.
        twin_type : TwinType or str
            The twin type to fit.
        family : str, optional
            Outcome family (default: the twin type's, as in :mod:`bayestwin.synthetic`).
        numeric_features, categorical_features : sequence of str, optional
            The features. When both are None they are inferred (see
            :func:`infer_features`).
        sampler : mapping, optional
            :class:`~bayestwin.model.spec.SamplerSettings` fields (``draws``, ``tune``,
            ``chains``, ``cores``, ``random_seed``, ``progressbar``...).
        experiments, with_experiments, activate, override_diagnostics, model_name
            As in :meth:`fit`.

        Returns
        -------
        TwinModelInfo
            The registered model row.

        Raises
        ------
        InvalidInputError
            If the sampler settings, the spec or the history are wrong.
        NotFitError
            If ``activate`` is asked for a fit that failed its diagnostics, without an
            override.
        """
        spec = history_spec(
            history,
            brand=brand,
            twin_type=twin_type,
            family=family,
            numeric_features=numeric_features,
            categorical_features=categorical_features,
            sampler=sampler,
        )
        return self.fit(
            history,
            spec,
            experiments=experiments,
            with_experiments=with_experiments,
            activate=activate,
            override_diagnostics=override_diagnostics,
            model_name=model_name,
        )
