"""The MLflow model registry as the service uses it, and the one model-naming rule.

:mod:`bayestwin.store.mlflow.registry` imports MLflow, which is slow to import; this
module imports it on first use only, so that the faces start fast when no model is
registered or loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bayestwin.vocabulary import TwinType

if TYPE_CHECKING:
    from bayestwin.model.fitted import FittedTwinModel
    from bayestwin.schemas import FidelityResult, TwinModelInfo
    from bayestwin.settings import Settings
    from bayestwin.store.mlflow.registry import RegisteredTwin

__all__ = ["MlflowRegistry", "model_name", "model_row"]

logger = logging.getLogger(__name__)

_MODULE = "bayestwin.store.mlflow.registry"


def _registry_module() -> ModuleType:
    return importlib.import_module(_MODULE)


def model_name(brand: str, twin_type: TwinType | str) -> str:
    """Registered name of a (brand, twin type)'s models, with or without MLflow.

    Parameters
    ----------
    brand : str
        The brand.
    twin_type : TwinType or str
        The twin type.

    Returns
    -------
    str
        :func:`bayestwin.store.mlflow.registry.registered_model_name`'s name, e.g.
        ``"bayestwin-kisqali-hcp"``.
    """
    return str(_registry_module().registered_model_name(brand, TwinType(twin_type)))


def model_row(
    fitted: FittedTwinModel,
    registered: RegisteredTwin | None,
    *,
    model_id: uuid.UUID,
    model_name: str,
    model_version: str,
    artifact_uri: str,
) -> TwinModelInfo:
    """The ``digital_twin_models`` row of a fit, with or without its MLflow version.

    Parameters
    ----------
    fitted : FittedTwinModel
        The fitted model.
    registered : RegisteredTwin or None
        Its MLflow run and version, when the registry is on; the row then takes their
        name, version and run id.
    model_id : UUID
        The row id.
    model_name, model_version : str
        The name and version of the row when ``registered`` is None.
    artifact_uri : str
        The saved model directory.

    Returns
    -------
    TwinModelInfo
        :func:`bayestwin.store.mlflow.registry.model_info_from`'s row, not active.
    """
    names = (
        {} if registered is not None else {"model_name": model_name, "model_version": model_version}
    )
    info: TwinModelInfo = _registry_module().model_info_from(
        fitted, registered, model_id=model_id, artifact_uri=artifact_uri, **names
    )
    return info


class MlflowRegistry:
    """Adapter over :mod:`bayestwin.store.mlflow.registry` for one tracking store.

    Parameters
    ----------
    tracking_uri : str
        The MLflow tracking (and registry) store.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    @classmethod
    def discover(cls, settings: Settings) -> tuple[MlflowRegistry | None, str]:
        """Return the registry of the settings' store and a status line for it.

        Parameters
        ----------
        settings : Settings
            Gives the tracking URI (:meth:`Settings.resolved_mlflow_uri`).

        Returns
        -------
        tuple
            The registry (None when the MLflow module cannot be imported) and a line
            such as ``"enabled (sqlite:///...)"``.
        """
        try:
            found = importlib.util.find_spec(_MODULE) is not None
        except ImportError:
            found = False
        if not found:
            return None, f"unavailable ({_MODULE} is not installed)"
        uri = settings.resolved_mlflow_uri()
        return cls(uri), f"enabled ({uri})"

    def prepare(self) -> None:
        """Create the store's tables and the fits' experiment before workers write to it."""
        _registry_module().prepare_store(self.tracking_uri)

    def log_fit(self, fitted: FittedTwinModel, name: str) -> RegisteredTwin:
        """Log a fit as a run and register it as a new version of ``name``."""
        registered: RegisteredTwin = _registry_module().log_fit(
            fitted, tracking_uri=self.tracking_uri, registered_name=name
        )
        return registered

    def set_active(self, info: TwinModelInfo) -> None:
        """Point the ``active`` alias of the row's registered model at its version."""
        _registry_module().set_active(
            info.model_name, info.model_version, tracking_uri=self.tracking_uri, force=True
        )

    def log_fidelity(self, info: TwinModelInfo, result: FidelityResult, step: int) -> None:
        """Add a validation's metrics to the run of the row's fit (when it has one)."""
        if info.mlflow_run_id:
            _registry_module().log_fidelity(
                info.mlflow_run_id, result, step=step, tracking_uri=self.tracking_uri
            )

    def load_fitted(self, info: TwinModelInfo) -> FittedTwinModel:
        """Load the fitted model of the row's registered version."""
        fitted: FittedTwinModel = _registry_module().load_fitted(
            info.model_name, version=info.model_version, tracking_uri=self.tracking_uri
        )
        return fitted

    def call_quietly(self, name: str, *args: Any) -> None:
        """Call a method; a failure is logged, never raised (the row is already stored)."""
        try:
            getattr(self, name)(*args)
        except Exception:
            logger.warning("MLflow registry call %s failed", name, exc_info=True)
