"""The one workflow the faces share: fit -> register -> activate -> simulate -> validate.

:class:`TwinService` ties the maths (:mod:`bayestwin.model`, :mod:`bayestwin.engine`)
to persistence (:mod:`bayestwin.store`: the database, the model directories and the
MLflow registry when it is available). The agent tools, the CLI and the REST API call
it and nothing below it; it computes nothing itself. It is split by job:

* :mod:`~bayestwin.service.models`: fit, register, activate and load models;
* :mod:`~bayestwin.service.simulations`: a simulation from its checks to its row, run
  in the background by :mod:`~bayestwin.service.jobs` (one worker pool and one
  watchdog over the ``simulation_timeout_seconds`` deadlines);
* :mod:`~bayestwin.service.memory`: identical requests answered from the cache, and the
  similar past simulations every result lists;
* :mod:`~bayestwin.service.validations`: real results, fidelity checks, a model's
  fidelity;
* :mod:`~bayestwin.service.experiments`: where real experiments' results are found by
  id (by default one JSON file per experiment under ``<data_dir>/experiments``);
* :mod:`~bayestwin.service.registry`: the MLflow registry and the one model-naming rule.

Without an active model for a (brand, twin type) the service raises a
:class:`~bayestwin.errors.NotFoundError` (code ``no_active_model``): it never makes
numbers up. Every error it raises on purpose is a :mod:`bayestwin.errors` type.

Import rule: the service may import everything below it (store, engine, model, core,
synthetic, schemas, settings, errors, vocabulary); nothing below it imports the service.
The faces (cli, api, tools, agents) import it from here: ``from bayestwin.service import
TwinService``.
"""

from bayestwin.service.twin import TwinService
from bayestwin.service.validations import ModelFidelity

__all__ = ["ModelFidelity", "TwinService"]
