"""The model comparison a service fit runs before it registers the model.

:func:`compare_for_service` reads the settings (``model_comparison``,
``comparison_max_units``) and, when asked, scores the fresh fit against the same model
without its unit and period effects (:func:`bayestwin.model.comparison.with_comparison`);
:meth:`~bayestwin.service.models.ModelsMixin.register` then saves the comparison with
the model, logs it on the MLflow run and copies it into the model row's
``performance_metrics["model_comparison"]``. :func:`checks_for_service` runs it and the
rehearsal (:func:`~bayestwin.service.rehearsals.rehearse_for_service`) in the order
every service fit uses.
"""

from __future__ import annotations

import pandas as pd

from bayestwin.model.comparison import with_comparison
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.service.rehearsals import ServiceContext, rehearse_for_service

__all__ = ["checks_for_service", "compare_for_service"]


def compare_for_service(
    service: ServiceContext, fitted: FittedTwinModel, history: pd.DataFrame
) -> FittedTwinModel:
    """Run the settings' model comparison on a fresh fit; return the model with it.

    Parameters
    ----------
    service : TwinService
        Gives the settings.
    fitted : FittedTwinModel
        The fit, not yet registered.
    history : DataFrame
        The history it was fitted on.

    Returns
    -------
    FittedTwinModel
        ``fitted`` itself when the setting ``model_comparison`` is off; else a copy with
        its ``comparison`` (see :func:`~bayestwin.model.comparison.with_comparison`).
    """
    settings = service.settings
    if not settings.model_comparison:
        return fitted
    return with_comparison(fitted, history, max_units=settings.comparison_max_units)


def checks_for_service(
    service: ServiceContext, fitted: FittedTwinModel, history: pd.DataFrame
) -> FittedTwinModel:
    """The settings' model comparison, then the rehearsal, of a fresh fit.

    Parameters
    ----------
    service : TwinService
        Gives the settings and the simulation engine.
    fitted : FittedTwinModel
        The fit, not yet registered.
    history : DataFrame
        The history it was fitted on.

    Returns
    -------
    FittedTwinModel
        The model with what the settings ask for: ``comparison`` and ``rehearsal``.
    """
    return rehearse_for_service(service, compare_for_service(service, fitted, history), history)
