"""Models: register, activate and load twin models.

A registered model is a directory written by :func:`bayestwin.model.io.save_model`
under the service's ``model_store_dir`` (the row's ``artifact_uri``), a row in the
database and, when the MLflow registry is on, a run and a registered model version.
Model names follow :func:`bayestwin.service.registry.model_name` only.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from bayestwin.core.population import eligible_mask
from bayestwin.errors import (
    BayesTwinError,
    ConflictError,
    InvalidInputError,
    NotFitError,
    NotFoundError,
    UnavailableError,
)
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.io import load_model, save_model
from bayestwin.schemas import Page, TwinModelInfo
from bayestwin.service.base import ServiceBase
from bayestwin.service.registry import model_name, model_row
from bayestwin.vocabulary import TwinType

__all__ = ["ArtifactSignature", "ModelsMixin", "artifact_signature"]

logger = logging.getLogger(__name__)

_VERSION_ATTEMPTS = 5


ArtifactSignature = tuple[tuple[str, int, int], ...]
"""Name, size and modification time (ns) of each file of a model directory."""


def artifact_signature(directory: Path | None) -> ArtifactSignature | None:
    """The signature of a model directory's files; None when it cannot be listed."""
    if directory is None:
        return None
    try:
        files = [(p.name, p.stat()) for p in directory.iterdir() if p.is_file()]
    except OSError:
        return None
    return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in files))


def _path_from_uri(uri: str) -> Path:
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


class ModelsMixin(ServiceBase):
    """Register, activate and load models (see :class:`~bayestwin.service.TwinService`)."""

    # -- registration ----------------------------------------------------------------
    def default_model_name(self, brand: str, twin_type: TwinType | str) -> str:
        """Registered name of a (brand, twin type)'s models: ``bayestwin-<brand>-<type>``.

        The one rule is :func:`bayestwin.store.mlflow.registry.registered_model_name`,
        with or without the MLflow registry.
        """
        return model_name(brand, twin_type)

    def register(
        self,
        fitted: FittedTwinModel,
        *,
        activate: bool = True,
        override_diagnostics: bool = False,
        model_name: str | None = None,
    ) -> TwinModelInfo:
        """Save a fitted model, register its row (and MLflow version) and maybe activate it.

        The model directory goes under :attr:`model_store_dir`; with the MLflow
        registry, the fit is also logged as a run and a registered model version, whose
        name, version and run id the row takes (else versions count up per name).

        Parameters
        ----------
        fitted : FittedTwinModel
            From :meth:`~bayestwin.model.fit.TwinGenerator.fit`.
        activate : bool
            Make it the active model of its (brand, twin type).
        override_diagnostics : bool
            Mark a model that failed its diagnostics fit for use anyway.
        model_name : str, optional
            Registered name (default :meth:`default_model_name`).

        Returns
        -------
        TwinModelInfo
            The stored row; ``artifact_uri`` is the model directory.

        Raises
        ------
        NotFitError
            If ``activate`` is asked for a model that failed its diagnostics, without
            an override.
        """
        if override_diagnostics and not fitted.override_diagnostics:
            fitted = dataclasses.replace(fitted, override_diagnostics=True)
        if activate:
            fitted.require_usable()
        default = self.default_model_name(fitted.brand, fitted.twin_type)
        name = model_name or default
        model_id = uuid.uuid4()
        directory = self.model_store_dir / f"{default}-{model_id.hex}"
        save_model(fitted, directory)
        try:
            registered = None if self._registry is None else self._registry.log_fit(fitted, name)
            info = model_row(
                fitted,
                registered,
                model_id=model_id,
                model_name=name,
                model_version=self._next_version(fitted, name),
                artifact_uri=str(directory.resolve()),
            )
            stored = self._insert_row(info, fitted, activate=activate)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        with self._models_lock:
            self._models[stored.model_id] = (fitted, artifact_signature(directory.resolve()))
        if activate and stored.mlflow_run_id:
            self._registry_call("set_active", stored)
        return stored

    def _insert_row(
        self, info: TwinModelInfo, fitted: FittedTwinModel, *, activate: bool
    ) -> TwinModelInfo:
        for _attempt in range(_VERSION_ATTEMPTS):
            try:
                return self.repository.register_model(info, activate=activate)
            except ConflictError:
                if self._registry is not None:
                    raise  # the registry's version is taken: the two stores disagree
                version = self._next_version(fitted, info.model_name)
                info = info.model_copy(update={"model_version": version})
        raise ConflictError(  # pragma: no cover - five concurrent registrations
            f"could not find a free version for {info.model_name!r}", code="already_exists"
        )

    def _next_version(self, fitted: FittedTwinModel, name: str) -> str:
        page = self.repository.list_models(
            brand=fitted.brand, twin_type=fitted.twin_type, limit=1000
        )
        numbers = [
            int(m.model_version)
            for m in page.items
            if m.model_name == name and m.model_version.isdigit()
        ]
        return str(max(numbers, default=0) + 1)

    def activate(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Make a registered model the active one of its (brand, twin type).

        Raises
        ------
        NotFoundError
            If no model has this id.
        NotFitError
            If the model failed its diagnostics and was not registered with an override.
        """
        info = self.repository.get_model(model_id)
        if not info.fit_for_use:
            raise NotFitError(
                f"model {info.model_id} ({info.brand}/{info.twin_type.value}) failed its "
                f"diagnostics ({info.diagnostics_reason or 'diagnostics failed'}) and cannot "
                "be activated; refit it, or register it with override_diagnostics=True",
                code="model_not_usable",
            )
        stored = self.repository.set_active_model(info.model_id)
        if stored.mlflow_run_id:
            self._registry_call("set_active", stored)
        return stored

    # -- lookup ----------------------------------------------------------------------
    def get_model(self, model_id: uuid.UUID | str) -> TwinModelInfo:
        """Return one model row (:class:`~bayestwin.errors.NotFoundError` when unknown)."""
        return self.repository.get_model(model_id)

    def active_model(self, brand: str, twin_type: TwinType | str) -> TwinModelInfo:
        """Return the active model row of a (brand, twin type).

        Raises
        ------
        NotFoundError
            With code ``"no_active_model"`` when none is active.
        """
        return self.repository.get_active_model(brand, twin_type)

    def list_models(self, **filters: Any) -> Page[TwinModelInfo]:
        """List model rows (see :meth:`TwinRepository.list_models`)."""
        return self.repository.list_models(**filters)

    def load_model(self, model: TwinModelInfo | uuid.UUID | str) -> FittedTwinModel:
        """Return the fitted model of a row, from memory or its directory.

        The model directory named by the row's ``artifact_uri`` is read; when it is
        gone and the MLflow registry is on, the registered version is loaded instead.
        A model kept in memory is used only while its directory's files are unchanged
        (same names, sizes and modification times); otherwise it is read again, so a
        damaged or removed artifact is noticed on the next call. A failed read is
        never kept.

        Raises
        ------
        NotFoundError
            If the row does not exist, or its model files are gone.
        UnavailableError
            Code ``"model_artifact"`` if the model files cannot be read (damaged or
            truncated); code ``"model_version"`` if they were written by another
            bayestwin version or format. The message names the model and its version,
            never a path.
        """
        info = model if isinstance(model, TwinModelInfo) else self.repository.get_model(model)
        directory = _path_from_uri(info.artifact_uri) if info.artifact_uri else None
        signature = artifact_signature(directory)
        with self._models_lock:
            cached = self._models.get(info.model_id)
        if cached is not None and cached[1] == signature:
            return cached[0]
        fitted = self._read_model(info, directory)
        if info.fit_for_use and not fitted.fit_for_use:
            # The row is the source of truth for "may serve" (an override at registration).
            fitted = dataclasses.replace(fitted, override_diagnostics=True)
        with self._models_lock:
            self._models[info.model_id] = (fitted, signature)
        return fitted

    def _read_model(self, info: TwinModelInfo, directory: Path | None) -> FittedTwinModel:
        """Read a row's fitted model from its directory, else from the registry."""
        what = f"model {info.model_name}, version {info.model_version}"
        on_disk = directory is not None and (directory / "metadata.json").exists()
        if not on_disk and (self._registry is None or not info.mlflow_run_id):
            logger.info("model files of %s not found at %s", info.model_id, directory)
            raise NotFoundError(
                f"model files for {what} ({info.model_id}) are missing; refit and register "
                "the model",
                code="not_found",
            )
        try:
            if on_disk:
                assert directory is not None
                return load_model(directory)
            assert self._registry is not None
            return self._registry.load_fitted(info)
        except BayesTwinError as exc:
            logger.info("model %s cannot be loaded: %s", info.model_id, exc)
            message = exc.message.replace(f"model at {directory}", "it")
            message = message.replace(str(directory), "its directory")
            raise type(exc)(f"{what}: {message}", code=exc.code, field=exc.field) from None
        except Exception as exc:
            # The path and the cause go to the log only; the answer names the model.
            logger.info(
                "model artifact of %s (%s) unreadable: %s: %s",
                info.model_id,
                directory if on_disk else "the MLflow registry",
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            raise UnavailableError(
                f"model artifact unreadable: {what}; refit or re-register",
                code="model_artifact",
            ) from None

    def load_active_model(
        self, brand: str, twin_type: TwinType | str
    ) -> tuple[TwinModelInfo, FittedTwinModel]:
        """Return the active model row of a (brand, twin type) and its fitted model."""
        info = self.repository.get_active_model(brand, twin_type)
        return info, self.load_model(info)

    def eligible_count(
        self, brand: str, twin_type: TwinType | str, target: Mapping[str, Any] | None
    ) -> int:
        """Count the units of the active model's population that pass target filters.

        Parameters
        ----------
        brand : str
            The brand.
        twin_type : TwinType or str
            The twin type.
        target : mapping, optional
            Column -> allowed values, or a ``{"min": ..., "max": ...}`` range (as in
            ``InterventionConfig.target``). None or empty: everyone.

        Returns
        -------
        int
            The number of eligible units.

        Raises
        ------
        NotFoundError
            If no model is active for the brand and twin type.
        InvalidInputError
            If a filter names an unknown column or matches no unit.
        """
        _, fitted = self.load_active_model(brand, twin_type)
        try:
            return int(eligible_mask(fitted.population, target).sum())
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="intervention_config.target") from None
