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
list naming each field at fault (``field``, ``location``: body, query or path).

Authentication: when an API key is configured (the ``api_key`` setting, i.e.
``BAYESTWIN_API_KEY``), every endpoint asks for it in the ``X-API-Key`` header.

Everything goes through :class:`~bayestwin.service.TwinService`; this module only
translates HTTP and the service's exceptions.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bayestwin import __version__
from bayestwin.settings import Settings, load_settings
from bayestwin.model.fitted import ModelNotUsableError
from bayestwin.schemas import (
    FidelityResult,
    SimulateInterventionRequest,
    SimulationResult,
    TwinModelInfo,
    ValidateFidelityRequest,
)
from bayestwin.service import (
    ExperimentResultNotFoundError,
    InvalidRequestError,
    SimulationTimeoutError,
    TwinService,
)
from bayestwin.store import (
    AlreadyExistsError,
    InvalidStateError,
    NoActiveModelError,
    NotFoundError,
    Page,
)
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = [
    "API_KEY_HEADER",
    "PREFIX",
    "PROBLEM_JSON",
    "FidelityHistory",
    "FidelitySummaryOut",
    "Problem",
    "ProblemField",
    "SimulateBody",
    "create_app",
]

logger = logging.getLogger(__name__)

PREFIX = "/api/v1/digital-twin"
PROBLEM_JSON = "application/problem+json"
API_KEY_HEADER = "X-API-Key"
MAX_OFFSET = 1_000_000_000
MAX_LIMIT = 1000


# -- wire models -------------------------------------------------------------------------


class ProblemField(BaseModel):
    """One field at fault."""

    field: str = Field(..., description="Dotted path of the field, e.g. 'twin_count'.")
    location: str | None = Field(None, description="'body', 'query', 'path' or 'header'.")
    message: str
    type: str = "value_error"


class Problem(BaseModel):
    """Problem details (RFC 9457)."""

    type: str = Field(..., description="URI that identifies the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemField] = Field(default_factory=list)


class SimulateBody(SimulateInterventionRequest):
    """Body of ``POST /simulate``: the tool's request plus the design it belongs to."""

    model_config = ConfigDict(extra="forbid")

    experiment_design_id: str | None = Field(
        None, max_length=255, description="Experiment design the simulation belongs to."
    )


class FidelitySummaryOut(BaseModel):
    """A model's fidelity over its validation window."""

    score: float | None = Field(None, description="Model fidelity score; null: unvalidated.")
    n_validations: int
    n_required: int
    warning: bool
    reason: str | None = None
    grade_counts: dict[str, int] = Field(default_factory=dict)


class FidelityHistory(BaseModel):
    """Response of ``GET /models/{id}/fidelity``."""

    model_id: uuid.UUID
    model: TwinModelInfo
    window_days: int
    summary: FidelitySummaryOut
    items: list[FidelityResult]
    total: int
    limit: int
    offset: int


# -- problems ----------------------------------------------------------------------------


def _problem_type(kind: str) -> str:
    return f"urn:bayestwin:problem:{kind}"


def _problem(
    request: Request,
    status: int,
    kind: str,
    title: str,
    detail: str,
    errors: list[ProblemField] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=_problem_type(kind),
        title=title,
        status=status,
        detail=detail,
        instance=str(request.url.path),
        errors=errors or [],
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _fields(errors: list[Any], default_location: str | None = None) -> list[ProblemField]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        location = default_location
        if loc and loc[0] in _LOCATIONS:
            location, loc = loc[0], loc[1:]
        out.append(
            ProblemField(
                field=".".join(loc) or (location or "request"),
                location=location,
                message=str(err.get("msg", "invalid")).removeprefix("Value error, "),
                type=str(err.get("type", "value_error")),
            )
        )
    return out


def _invalid(request: Request, fields: list[ProblemField]) -> JSONResponse:
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
    return _problem(request, 422, "invalid-input", "Invalid input", summary, fields)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(request, _fields(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return _invalid(request, _fields(list(exc.errors()), "body"))

    @app.exception_handler(InvalidRequestError)
    async def _invalid_request(request: Request, exc: InvalidRequestError) -> JSONResponse:
        return _invalid(
            request, [ProblemField(field=exc.field, location="body", message=exc.message)]
        )

    @app.exception_handler(NoActiveModelError)
    async def _no_model(request: Request, exc: NoActiveModelError) -> JSONResponse:
        fields = [
            ProblemField(field=name, location="body", message=str(exc), type="no_active_model")
            for name in ("brand", "target_population")
        ]
        return _problem(request, 422, "no-active-model", "No active model", str(exc), fields)

    @app.exception_handler(ExperimentResultNotFoundError)
    async def _no_result(request: Request, exc: ExperimentResultNotFoundError) -> JSONResponse:
        field = ProblemField(
            field="actual_experiment_id", location="body", message=str(exc), type="not_found"
        )
        return _problem(
            request,
            404,
            "experiment-result-not-found",
            "Experiment result not found",
            str(exc),
            [field],
        )

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        fields = []
        if exc.kind in ("simulation", "model"):
            location = "body" if request.method == "POST" else "path"
            fields.append(
                ProblemField(
                    field=f"{exc.kind}_id", location=location, message=str(exc), type="not_found"
                )
            )
        return _problem(request, 404, "not-found", "Not found", str(exc), fields)

    @app.exception_handler(InvalidStateError)
    async def _conflict(request: Request, exc: InvalidStateError) -> JSONResponse:
        return _problem(request, 409, "invalid-state", "Conflict", str(exc))

    @app.exception_handler(AlreadyExistsError)
    async def _exists(request: Request, exc: AlreadyExistsError) -> JSONResponse:
        return _problem(request, 409, "already-exists", "Conflict", str(exc))

    @app.exception_handler(ModelNotUsableError)
    async def _not_usable(request: Request, exc: ModelNotUsableError) -> JSONResponse:
        return _problem(request, 409, "model-not-usable", "Model not usable", str(exc))

    @app.exception_handler(SimulationTimeoutError)
    async def _timeout(request: Request, exc: SimulationTimeoutError) -> JSONResponse:
        return _problem(request, 504, "timeout", "Simulation timed out", str(exc))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        return _problem(
            request,
            422,
            "invalid-input",
            "Invalid input",
            "a value in the request cannot be stored or compared by the database "
            "(e.g. a NUL character in a string)",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {401: "unauthorized", 404: "not-found", 405: "method-not-allowed"}.get(
            exc.status_code, "http-error"
        )
        title = {401: "Unauthorized", 404: "Not found", 405: "Method not allowed"}.get(
            exc.status_code, "HTTP error"
        )
        headers = dict(exc.headers) if exc.headers else None
        return _problem(request, exc.status_code, kind, title, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem(
            request,
            500,
            "internal-error",
            "Internal server error",
            "the server failed to handle the request; see its log",
        )


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or wrong API key",
        404: "Not found",
        409: "Conflict with the current state",
        422: "Invalid input (the fields at fault are listed)",
    }
    return {c: {"model": Problem, "description": text.get(c, "Error")} for c in codes}


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


# -- the app -----------------------------------------------------------------------------


def _service(request: Request) -> TwinService:
    service: TwinService = request.app.state.service
    return service


ServiceDep = Annotated[TwinService, Depends(_service)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]


_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
ApiKey = Annotated[str | None, Security(_key_header)]


def _router(api_key: str | None) -> APIRouter:
    def check_key(key: ApiKey = None) -> None:
        if api_key is None:
            return
        if key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
            raise StarletteHTTPException(
                401,
                detail=f"missing or wrong {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )

    auth = [401] if api_key is not None else []
    router = APIRouter(prefix=PREFIX, tags=["digital-twin"], dependencies=[Depends(check_key)])

    @router.post(
        "/simulate",
        status_code=202,
        response_model=SimulationResult,
        response_model_exclude={"ate_draws", "twin_unit_ids"},
        summary="Run intervention simulation",
        responses={
            200: {"model": SimulationResult, "description": "Answered from the cache"},
            **_error_responses(*auth, 409, 422),
        },
    )
    def simulate(body: SimulateBody, response: Response, service: ServiceDep) -> SimulationResult:
        """Start a simulation; poll ``GET /simulations/{id}`` for its result."""
        request = SimulateInterventionRequest.model_validate(
            body.model_dump(exclude={"experiment_design_id"})
        )
        row = service.submit(request, experiment_design_id=body.experiment_design_id)
        response.headers["Location"] = f"{PREFIX}/simulations/{row.simulation_id}"
        if row.simulation_status is SimulationStatus.COMPLETED:
            response.status_code = 200
        return row

    @router.get(
        "/simulations",
        response_model=Page[SimulationResult],
        summary="List simulations",
        responses=_error_responses(*auth, 422),
    )
    def list_simulations(
        service: ServiceDep,
        brand: Annotated[str | None, Query(max_length=100)] = None,
        twin_type: TwinType | None = None,
        status: SimulationStatus | None = None,
        intervention_type: Annotated[str | None, Query(max_length=100)] = None,
        model_id: uuid.UUID | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[SimulationResult]:
        """Simulations, newest first, without their draws."""
        return service.list_simulations(
            brand=brand,
            twin_type=twin_type,
            status=status,
            intervention_type=intervention_type,
            model_id=model_id,
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/simulations/{simulation_id}",
        response_model=SimulationResult,
        summary="Get simulation details",
        responses=_error_responses(*auth, 404, 422),
    )
    def get_simulation(
        simulation_id: uuid.UUID,
        service: ServiceDep,
        include_draws: Annotated[
            bool, Query(description="Include the ATE draws and the twin unit ids.")
        ] = False,
    ) -> SimulationResult:
        """One simulation, with its status and (once completed) its result."""
        return service.get_simulation(simulation_id, include_draws=include_draws)

    @router.post(
        "/validate",
        status_code=201,
        response_model=FidelityResult,
        summary="Validate simulation against actuals",
        responses=_error_responses(*auth, 404, 409, 422),
    )
    def validate(body: ValidateFidelityRequest, service: ServiceDep) -> FidelityResult:
        """Compare a completed simulation with its real experiment's result and record it.

        The result is ``outcome`` when given, else the one registered for
        ``actual_experiment_id``.
        """
        return service.validate(body.simulation_id, body.actual_experiment_id, outcome=body.outcome)

    @router.get(
        "/models",
        response_model=Page[TwinModelInfo],
        summary="List twin models",
        responses=_error_responses(*auth, 422),
    )
    def list_models(
        service: ServiceDep,
        brand: Annotated[str | None, Query(max_length=100)] = None,
        twin_type: TwinType | None = None,
        active_only: bool = False,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> Page[TwinModelInfo]:
        """Twin models, newest first."""
        return service.list_models(
            brand=brand, twin_type=twin_type, active_only=active_only, limit=limit, offset=offset
        )

    @router.get(
        "/models/{model_id}/fidelity",
        response_model=FidelityHistory,
        summary="Get model fidelity history",
        responses=_error_responses(*auth, 404, 422),
    )
    def model_fidelity(
        model_id: uuid.UUID,
        service: ServiceDep,
        all_history: Annotated[
            bool, Query(description="Every validation, not only the window's.")
        ] = False,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> FidelityHistory:
        """A model's fidelity score over its window and its validations, oldest first."""
        fid = service.model_fidelity(model_id, all_history=all_history)
        return FidelityHistory(
            model_id=fid.model.model_id,
            model=fid.model,
            window_days=service.settings.fidelity_validation_window_days,
            summary=FidelitySummaryOut(**fid.summary.to_dict()),
            items=fid.history[offset : offset + limit],
            total=len(fid.history),
            limit=limit,
            offset=offset,
        )

    return router


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
        Key required in ``X-API-Key``; default the ``api_key`` setting. None (and no
        setting): no key is asked for.

    Returns
    -------
    FastAPI
        The app; run it with ``uvicorn`` or ``bayestwin serve``.
    """
    cfg = (
        settings
        if settings is not None
        else (service.settings if service is not None else load_settings())
    )
    key = api_key
    if key is None and cfg.api_key is not None:
        key = cfg.api_key.get_secret_value() or None

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
    _install_handlers(app)
    app.include_router(_router(key))
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    return app
