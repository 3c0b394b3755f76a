"""REST API (spec section 8), FastAPI; install with the extra ``bayestwin[api]``.

========  ==============================================  ================================
POST      ``/api/v1/digital-twin/simulate``               start a simulation (202, async)
GET       ``/api/v1/digital-twin/simulations``            list simulations (paginated)
GET       ``/api/v1/digital-twin/simulations/{id}``       one simulation (poll it)
POST      ``/api/v1/digital-twin/validate``               validate against the real result
GET       ``/api/v1/digital-twin/models``                 list twin models (paginated)
GET       ``/api/v1/digital-twin/models/{id}/fidelity``   a model's fidelity history
========  ==============================================  ================================

``POST /simulate`` validates the request, writes a pending row and answers ``202
Accepted`` with it (and a ``Location`` header); a worker thread runs it, and a
simulation still unfinished after ``simulation_timeout_seconds`` is marked failed. Poll
``GET /simulations/{id}`` until its status is ``completed`` or ``failed``. A seeded
request already answered on the same model comes back completed at once (``200``).

Errors are problem details (RFC 9457, ``application/problem+json``) with an ``errors``
list naming each field at fault (``field``, ``location``: body, query or path); the
status follows the error's kind (:mod:`~bayestwin.api.problems`).

Authentication: when an API key is configured (the ``api_key`` setting, i.e.
``BAYESTWIN_API_KEY``), every request asks for it in the ``X-API-Key`` header: the
endpoints and the documentation (``/openapi.json``, ``/docs``, ``/redoc``) alike. It is
checked before the request is routed or its body read, so a request without it gets
``401`` first. An empty key is refused when the app is built; unset it to serve
without a key.

* :mod:`~bayestwin.api.routes`: the endpoints and their wire models;
* :mod:`~bayestwin.api.auth`: the API key and its check;
* :mod:`~bayestwin.api.problems`: errors as problem details.

Import rule: the API is a face. It imports :mod:`bayestwin.service`,
:mod:`bayestwin.schemas`, :mod:`bayestwin.errors`, :mod:`bayestwin.settings` and
:mod:`bayestwin.vocabulary`; never the core, model, engine or store. Everything goes
through :class:`~bayestwin.service.TwinService`; this package only translates HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bayestwin._version import __version__
from bayestwin.api.auth import API_KEY_HEADER, ApiKeyMiddleware, resolve_api_key
from bayestwin.api.problems import PROBLEM_JSON, install_handlers
from bayestwin.api.routes import PREFIX, build_router
from bayestwin.service import TwinService
from bayestwin.settings import Settings, load_settings

__all__ = ["API_KEY_HEADER", "PREFIX", "PROBLEM_JSON", "create_app"]

logger = logging.getLogger(__name__)


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI whose error responses are typed ``application/problem+json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if code.isdigit() and int(code) >= 400 and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(
    service: TwinService | None = None,
    *,
    settings: Settings | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """Build the FastAPI application.

    Parameters
    ----------
    service : TwinService, optional
        The service to serve; by default one is built from ``settings`` when the app
        starts and closed when it stops.
    settings : Settings, optional
        Settings for that service and for the API key (default
        :func:`~bayestwin.settings.load_settings`).
    api_key : str, optional
        Key required in ``X-API-Key`` on every request; default the ``api_key``
        setting. None (and no setting): no key is asked for.

    Returns
    -------
    FastAPI
        The app; run it with ``uvicorn`` or ``bayestwin serve``.

    Raises
    ------
    InvalidInputError
        With field ``api_key``, if the key is empty (e.g. ``BAYESTWIN_API_KEY=""``).
    """
    cfg = (
        settings
        if settings is not None
        else (service.settings if service is not None else load_settings())
    )
    key = resolve_api_key(api_key, cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        svc = service if service is not None else TwinService(cfg)
        app.state.service = svc
        try:
            failed = svc.fail_stale_simulations()
            if failed:
                logger.warning("marked %d abandoned simulations failed", len(failed))
            yield
        finally:
            if owned:
                svc.close()

    app = FastAPI(
        title="bayestwin digital twin API",
        version=__version__,
        description=(
            "Pre-screen A/B tests with Bayesian digital twins: simulate interventions, "
            "poll their results, validate them against real experiments, and follow "
            "each model's fidelity."
        ),
        lifespan=lifespan,
    )
    if service is not None:
        app.state.service = service
    install_handlers(app)
    if key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=key)
    app.include_router(build_router(key))
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    return app
