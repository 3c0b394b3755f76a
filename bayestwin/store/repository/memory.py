"""The repository's memory (spec 5.3): past simulations that answer or resemble a request.

* episodic: :meth:`MemoryRecords.find_similar_simulations` returns past completed
  simulations of the same brand, twin type and intervention type, nearest first by
  :func:`~bayestwin.store.repository.matching.config_distance`;
* procedural: :meth:`MemoryRecords.cached_result` returns the stored result of the same
  request (:func:`~bayestwin.store.repository.matching.request_hash`) on the same model
  with the same seed.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import undefer

from bayestwin.errors import InvalidInputError
from bayestwin.schemas import SimilarSimulation, SimulationResult
from bayestwin.store.repository.base import RepositoryBase
from bayestwin.store.repository.matching import RequestLike, config_distance, request_parts
from bayestwin.store.repository.rows import as_uuid, simulation_result
from bayestwin.store.tables import TwinSimulation
from bayestwin.vocabulary import SimulationStatus

__all__ = ["MemoryRecords"]


class MemoryRecords(RepositoryBase):
    """Past completed simulations, found by similarity or by request identity."""

    def find_similar_simulations(
        self,
        request: RequestLike,
        *,
        model_id: uuid.UUID | str | None = None,
        limit: int = 5,
        max_distance: float | None = None,
        candidates: int = 500,
    ) -> list[SimilarSimulation]:
        """Past completed simulations that asked a similar question (episodic memory).

        Candidates are the ``candidates`` most recent completed simulations with the
        request's brand, twin type and intervention type (and ``model_id`` when given);
        they are ranked by ``config_distance`` to the request's config, newest first
        among equals.

        Parameters
        ----------
        request : SimulateInterventionRequest or SimulationResult
            What is being asked. A stored simulation is never returned as similar to
            itself.
        model_id : UUID or str, optional
            Only simulations of this model.
        limit : int
            How many to return at most.
        max_distance : float, optional
            Drop candidates farther than this.
        candidates : int
            How many recent simulations to rank.

        Returns
        -------
        list of SimilarSimulation
            Nearest first; simulations come without their draws.
        """
        if limit < 1 or candidates < 1:
            raise InvalidInputError("limit and candidates must be >= 1", field="limit")
        brand, twin_type, intervention_type, config = request_parts(request)
        stmt = (
            sa.select(TwinSimulation)
            .where(
                TwinSimulation.brand == brand,
                TwinSimulation.twin_type == twin_type,
                TwinSimulation.intervention_type == intervention_type,
                TwinSimulation.simulation_status == SimulationStatus.COMPLETED,
            )
            .order_by(TwinSimulation.created_at.desc(), TwinSimulation.simulation_id)
            .limit(candidates)
        )
        if model_id is not None:
            stmt = stmt.where(TwinSimulation.model_id == as_uuid(model_id, "model_id"))
        if isinstance(request, SimulationResult):
            stmt = stmt.where(TwinSimulation.simulation_id != request.simulation_id)
        with self._read() as session:
            found = [simulation_result(r, include_draws=False) for r in session.scalars(stmt)]
        # sorted() is stable: among equal distances the newest stays first.
        ranked = sorted(
            ((config_distance(config, sim.intervention_config), sim) for sim in found),
            key=lambda item: item[0],
        )
        return [
            SimilarSimulation(simulation=sim, distance=distance)
            for distance, sim in ranked
            if max_distance is None or distance <= max_distance
        ][:limit]

    def cached_result(
        self,
        model_id: uuid.UUID | str,
        request_hash: str,
        random_seed: int | None,
    ) -> SimulationResult | None:
        """The stored result of the same request, model and seed (procedural memory).

        Parameters
        ----------
        model_id : UUID or str
            The model (a model row is one version).
        request_hash : str
            ``request_hash`` of the request.
        random_seed : int or None
            The request's seed. Without a seed a request asks for fresh draws, so there
            is no cache hit.

        Returns
        -------
        SimulationResult or None
            The most recent completed match, draws included; None when there is none.
        """
        if random_seed is None:
            return None
        key = as_uuid(model_id, "model_id")
        with self._read() as session:
            row = session.scalars(
                sa.select(TwinSimulation)
                .options(undefer(TwinSimulation.ate_draws), undefer(TwinSimulation.twin_unit_ids))
                .where(
                    TwinSimulation.model_id == key,
                    TwinSimulation.request_hash == request_hash,
                    TwinSimulation.random_seed == random_seed,
                    TwinSimulation.simulation_status == SimulationStatus.COMPLETED,
                )
                .order_by(TwinSimulation.completed_at.desc(), TwinSimulation.simulation_id)
                .limit(1)
            ).one_or_none()
            return None if row is None else simulation_result(row, include_draws=True)
