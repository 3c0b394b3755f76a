"""The rehearsal a service fit runs before it registers the model.

:func:`rehearse_for_service` reads the settings (``rehearsal``, ``rehearsal_placebos``)
and runs :func:`bayestwin.engine.rehearsal.rehearse` with the service's engine, so the
placebo simulations use the very decision thresholds its simulations do; the fitted
model comes back with its :attr:`~bayestwin.model.fitted.FittedTwinModel.rehearsal`,
which :meth:`~bayestwin.service.models.ModelsMixin.register` then saves with the
model, logs on the MLflow run and copies into the model row. A rehearsal that fails
does not lose the fit: the model carries a rehearsal whose ``reason`` says why, and
no numbers. :class:`RehearsalsMixin` offers the same as a method of the service.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

import pandas as pd

from bayestwin.engine.rehearsal import Rehearsal, rehearse
from bayestwin.engine.simulation import SimulationEngine
from bayestwin.model.fitted import FittedTwinModel
from bayestwin.service.base import ServiceBase
from bayestwin.settings import Settings

__all__ = ["RehearsalsMixin", "ServiceContext", "rehearsal_seed", "rehearse_for_service"]

logger = logging.getLogger(__name__)


class ServiceContext(Protocol):
    """What a fit-time check reads of the service: its settings and its engine."""

    settings: Settings
    engine: SimulationEngine


def rehearsal_seed(fitted: FittedTwinModel) -> int:
    """The seed of a model's rehearsal: its fit's seed (0 when the fit drew a fresh one)."""
    return fitted.fit_seed


def rehearse_for_service(
    service: ServiceContext, fitted: FittedTwinModel, history: pd.DataFrame
) -> FittedTwinModel:
    """Run the settings' rehearsal on a fresh fit; return the model with it.

    Parameters
    ----------
    service : TwinService
        Gives the settings and the simulation engine (its decision thresholds).
    fitted : FittedTwinModel
        The fit, not yet registered.
    history : DataFrame
        The history it was fitted on.

    Returns
    -------
    FittedTwinModel
        ``fitted`` itself when the setting ``rehearsal`` is off; else a copy with
        ``rehearsal`` set (``rehearsal_placebos`` placebo types, seeded by
        :func:`rehearsal_seed`). When the rehearsal raises, its ``reason`` names the
        error and it holds no numbers; the error is logged.
    """
    settings = service.settings
    if not settings.rehearsal:
        return fitted
    seed = rehearsal_seed(fitted)
    start = time.perf_counter()
    try:
        rehearsal = rehearse(
            fitted,
            history,
            placebos=settings.rehearsal_placebos,
            seed=seed,
            engine=service.engine,
        )
    except Exception as exc:  # noqa: BLE001 - the fit stands; the rehearsal says it failed
        logger.warning(
            "rehearsal of %s/%s failed", fitted.brand, fitted.twin_type.value, exc_info=True
        )
        rule = service.engine.settings.rule
        rehearsal = Rehearsal(
            placebos=settings.rehearsal_placebos,
            seed=seed,
            seconds=time.perf_counter() - start,
            min_effect_threshold=rule.min_effect_threshold,
            confidence_threshold=rule.confidence_threshold,
            reason=f"the rehearsal failed: {type(exc).__name__}: {exc}"[:2000],
        )
    return dataclasses.replace(fitted, rehearsal=rehearsal)


class RehearsalsMixin(ServiceBase):
    """The fit-time rehearsal as a service method (see :func:`rehearse_for_service`)."""

    def rehearse(self, fitted: FittedTwinModel, history: pd.DataFrame) -> FittedTwinModel:
        """Return ``fitted`` with the settings' rehearsal (see :func:`rehearse_for_service`).

        Parameters
        ----------
        fitted : FittedTwinModel
            The fit, not yet registered.
        history : DataFrame
            The history it was fitted on.

        Returns
        -------
        FittedTwinModel
            The model with its ``rehearsal`` (unchanged when the setting is off).
        """
        return rehearse_for_service(self, fitted, history)
