"""The six endpoints under :data:`PREFIX`, and the wire models only they use."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from bayestwin.api.auth import API_KEY_HEADER, key_matches
from bayestwin.api.problems import Problem
from bayestwin.schemas import (
    FidelityResult,
    Page,
    SimulationResult,
    SimulationSubmission,
    TwinModelInfo,
    ValidateFidelityRequest,
)
from bayestwin.schemas.limits import BRAND_LENGTH, INTERVENTION_TYPE_LENGTH
from bayestwin.service import TwinService
from bayestwin.vocabulary import SimulationStatus, TwinType

__all__ = [
    "API_KEY_HEADER",
    "PREFIX",
    "FidelityHistory",
    "FidelitySummaryOut",
    "SimulateBody",
    "build_router",
]

PREFIX = "/api/v1/digital-twin"
MAX_OFFSET = 1_000_000_000
MAX_LIMIT = 1000


# -- wire models -------------------------------------------------------------------------


class SimulateBody(SimulationSubmission):
    """Body of ``POST /simulate``: the tool's request plus the design it belongs to."""


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


# -- dependencies ------------------------------------------------------------------------


def _service(request: Request) -> TwinService:
    service: TwinService = request.app.state.service
    return service


ServiceDep = Annotated[TwinService, Depends(_service)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
ApiKey = Annotated[str | None, Security(_key_header)]


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or wrong API key",
        404: "Not found",
        409: "Conflict with the current state",
        422: "Invalid input (the fields at fault are listed)",
    }
    return {c: {"model": Problem, "description": text.get(c, "Error")} for c in codes}


# -- the endpoints -----------------------------------------------------------------------


def _simulation_routes(router: APIRouter, auth: list[int]) -> None:
    @router.post(
        "/simulate",
        status_code=202,
        response_model=SimulationResult,
        summary="Run intervention simulation",
        responses={
            200: {"model": SimulationResult, "description": "Answered from the cache"},
            **_error_responses(*auth, 409, 422),
        },
    )
    def simulate(body: SimulateBody, response: Response, service: ServiceDep) -> SimulationResult:
        """Start a simulation; poll ``GET /simulations/{id}`` for its result."""
        row = service.submit(body.request(), experiment_design_id=body.experiment_design_id)
        response.headers["Location"] = f"{PREFIX}/simulations/{row.simulation_id}"
        if row.simulation_status is SimulationStatus.COMPLETED:
            response.status_code = 200
        return row.lean()

    @router.get(
        "/simulations",
        response_model=Page[SimulationResult],
        summary="List simulations",
        responses=_error_responses(*auth, 422),
    )
    def list_simulations(
        service: ServiceDep,
        brand: Annotated[str | None, Query(max_length=BRAND_LENGTH)] = None,
        twin_type: TwinType | None = None,
        status: SimulationStatus | None = None,
        intervention_type: Annotated[str | None, Query(max_length=INTERVENTION_TYPE_LENGTH)] = None,
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


def _validation_routes(router: APIRouter, auth: list[int]) -> None:
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
        return service.validate(
            body.simulation_id,
            body.actual_experiment_id,
            outcome=body.outcome,
            replace=body.replace,
        )


def _model_routes(router: APIRouter, auth: list[int]) -> None:
    @router.get(
        "/models",
        response_model=Page[TwinModelInfo],
        summary="List twin models",
        responses=_error_responses(*auth, 422),
    )
    def list_models(
        service: ServiceDep,
        brand: Annotated[str | None, Query(max_length=BRAND_LENGTH)] = None,
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


def build_router(api_key: str | None) -> APIRouter:
    """Return the router of the six endpoints.

    Parameters
    ----------
    api_key : str or None
        Key every endpoint asks for in the ``X-API-Key`` header; None: none is asked for.

    Returns
    -------
    APIRouter
        The endpoints under :data:`PREFIX`.
    """

    def check_key(key: ApiKey = None) -> None:
        # the app's middleware checks first; this documents the key in the OpenAPI
        # schema and guards the router where it is mounted without that middleware
        if api_key is None:
            return
        if not key_matches(key, api_key):
            raise StarletteHTTPException(
                401,
                detail=f"missing or wrong {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )

    auth = [401] if api_key is not None else []
    router = APIRouter(prefix=PREFIX, tags=["digital-twin"], dependencies=[Depends(check_key)])
    _simulation_routes(router, auth)
    _validation_routes(router, auth)
    _model_routes(router, auth)
    return router
