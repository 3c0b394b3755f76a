"""The MLflow pyfunc face of a fitted twin model.

A logged twin is a pyfunc "model from code": the code file (:data:`PYFUNC_CODE`) builds
a :class:`TwinPyfuncModel`, and the artifact :data:`MODEL_ARTIFACT` is the whole saved
model directory of :func:`bayestwin.model.io.save_model`. ``mlflow.pyfunc.load_model``
then returns a model whose ``predict`` is
:func:`bayestwin.engine.outcomes.predict_expected_outcomes` (see there for the input and
output columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import PythonModel

from bayestwin.engine.outcomes import predict_expected_outcomes
from bayestwin.errors import NotFitError
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.model.io import load_model

__all__ = ["MODEL_ARTIFACT", "PYFUNC_CODE", "TwinPyfuncModel", "model_dir_in"]

MODEL_ARTIFACT = "model_dir"
"""Name of the pyfunc artifact that holds the saved model directory."""

PYFUNC_CODE = """\
from mlflow.models import set_model

from bayestwin.store.mlflow.pyfunc import TwinPyfuncModel

set_model(TwinPyfuncModel())
"""
"""The code file logged with every twin model."""


class TwinPyfuncModel(PythonModel):
    """The pyfunc face of a fitted twin model.

    It holds nothing until MLflow calls :meth:`load_context`, which loads the model
    directory logged as the ``model_dir`` artifact.
    """

    def __init__(self) -> None:
        self._fitted: FittedTwinModel | None = None

    def load_context(self, context: Any) -> None:
        """Load the fitted model from the ``model_dir`` artifact."""
        self._fitted = load_model(context.artifacts[MODEL_ARTIFACT])

    @property
    def fitted(self) -> FittedTwinModel:
        """The fitted model; raises ``NotFitError`` before :meth:`load_context`."""
        if self._fitted is None:
            raise NotFitError(
                "the model is not loaded; load it with mlflow.pyfunc.load_model",
                code="model_not_loaded",
            )
        return self._fitted

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Expected outcome of each row's unit under its intervention.

        Parameters
        ----------
        context : PythonModelContext
            Unused.
        model_input : DataFrame
            See :func:`~bayestwin.engine.outcomes.predict_expected_outcomes`.
        params : dict, optional
            Unused.

        Returns
        -------
        DataFrame
            ``expected_outcome``, ``sd``, ``q05``, ``q95`` (and ``unit_id``).

        Raises
        ------
        NotFitError
            If the model failed its diagnostics without an override.
        """
        fitted = self.fitted
        fitted.require_usable()
        return predict_expected_outcomes(fitted.posterior, model_input)


def model_dir_in(root: Path) -> Path:
    """The bayestwin model directory inside a downloaded pyfunc model (or ``root``)."""
    if (root / "metadata.json").exists():
        return root
    if not (root / "MLmodel").exists():
        raise FileNotFoundError(f"{root} holds neither an MLflow model nor a bayestwin model")
    flavor = Model.load(str(root)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(MODEL_ARTIFACT)
    if not entry:
        raise FileNotFoundError(
            f"the MLflow model at {root} has no {MODEL_ARTIFACT!r} artifact; it was not "
            "logged by bayestwin"
        )
    return root / entry["path"]
