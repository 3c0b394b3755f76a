"""The service's memory of past simulations.

* Procedural memory: a request identical to a completed one (same model row,
  intervention config, twin count, confidence level and seed, under the same decision
  settings) is answered with the stored result, marked ``from_cache=True``
  (:meth:`~bayestwin.store.repository.TwinRepository.cached_result`).
* Episodic memory: every simulation result lists the most similar past simulations of
  the same brand, twin type and intervention type, nearest first, each with its
  validation against the real experiment when it has one
  (:meth:`~bayestwin.store.repository.TwinRepository.find_similar_simulations`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from bayestwin.schemas import (
    SimilarSimulation,
    SimulateInterventionRequest,
    SimulationResult,
)
from bayestwin.service.base import ServiceBase

__all__ = ["SIMILAR_LIMIT", "MemoryMixin", "as_request"]

SIMILAR_LIMIT = 5
"""How many similar past simulations a result lists."""


def as_request(
    request: SimulateInterventionRequest | Mapping[str, Any],
) -> SimulateInterventionRequest:
    """Return ``request`` as a :class:`~bayestwin.schemas.SimulateInterventionRequest`.

    Raises
    ------
    pydantic.ValidationError
        If a mapping does not validate.
    """
    if isinstance(request, SimulateInterventionRequest):
        return request
    return SimulateInterventionRequest.model_validate(dict(request))


class MemoryMixin(ServiceBase):
    """The procedural cache and the similar past simulations."""

    def similar_simulations(
        self,
        request: SimulateInterventionRequest | SimulationResult | Mapping[str, Any],
        *,
        limit: int = SIMILAR_LIMIT,
    ) -> list[SimilarSimulation]:
        """Past completed simulations most similar to a request (episodic memory).

        Parameters
        ----------
        request : SimulateInterventionRequest, SimulationResult or mapping
            What is asked; a stored simulation is never listed as similar to itself.
        limit : int
            How many to return at most.

        Returns
        -------
        list of SimilarSimulation
            Of the same brand, twin type and intervention type, nearest first (by
            :func:`~bayestwin.store.repository.config_distance`), without their draws;
            each with its latest validation (the real outcome) when it was validated.
        """
        req = request if isinstance(request, SimulationResult) else as_request(request)
        found = self.repository.find_similar_simulations(req, limit=limit)
        return [self._with_validation(item) for item in found]

    def _with_validation(self, item: SimilarSimulation) -> SimilarSimulation:
        if item.validation is not None:
            return item
        validations = self.repository.list_validations(item.simulation.simulation_id)
        if not validations:
            return item
        return item.model_copy(update={"validation": validations[-1]})  # oldest first

    def _remembered(self, result: SimulationResult, **update: Any) -> SimulationResult:
        """Return ``result`` with its similar past simulations (and ``update``) set."""
        similar = self.similar_simulations(result)
        return result.model_copy(update={**update, "similar_simulations": similar})

    def _cached(
        self, model_id: uuid.UUID, key: str, random_seed: int | None, **update: Any
    ) -> SimulationResult | None:
        """The stored result of an identical request, marked ``from_cache``; else None."""
        hit = self.repository.cached_result(model_id, key, random_seed)
        if hit is None:
            return None
        return self._remembered(hit, from_cache=True, **update)
