"""Qdrant through ``qdrant-client`` over REST (a Qdrant server on a cluster). ``index: flat`` searches
exactly (``exact=True``); ``index_params`` are HNSW build parameters (``m``, ``ef_construct``),
``search_params`` search parameters (``hnsw_ef``).

A ``url`` of ``local:<directory>`` selects qdrant-client's local mode: an in-process Python emulation with
exact search only (its speed says nothing of Qdrant's), which the tests use because the Qdrant server
does not install from the registries here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...load.http import RequestFailed
from ...orchestrators.base import ServiceError
from ..base import secret
from . import VectorSearch


class Qdrant:
    def __init__(self, spec: VectorSearch) -> None:
        from qdrant_client import QdrantClient

        self.spec = spec
        key = secret(spec.api_key_env, "workload.vector.api_key_env")
        local = spec.url.removeprefix("local:") if spec.url.startswith("local:") else None
        self.client: Any = QdrantClient(path=local) if local else QdrantClient(url=spec.url, api_key=key, timeout=10)
        try:
            self.client.get_collections()
        except Exception as exc:  # httpx and qdrant's own transport errors
            raise ServiceError(f"{spec.where}: cannot connect: {exc}") from None

    def create(self, recreate: bool) -> bool:
        from qdrant_client import models

        c, name = self.client, self.spec.collection
        if c.collection_exists(name):
            if not recreate:
                return False
            c.delete_collection(name)
        from . import vectors

        dim = int(vectors(self.spec)[0].shape[1])
        distance = {"l2": models.Distance.EUCLID, "cosine": models.Distance.COSINE, "ip": models.Distance.DOT}
        try:
            c.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=distance[self.spec.metric]),
                hnsw_config=models.HnswConfigDiff(**dict(self.spec.index_params)) if self.spec.index_params else None,
            )
        except Exception as exc:  # pydantic validation of a bad parameter, or the server's answer
            raise ServiceError(f"{self.spec.where}: {exc}") from None
        return True

    def insert(self, ids: np.ndarray, vectors: np.ndarray, groups: np.ndarray) -> None:
        from qdrant_client import models

        self.client.upsert(
            self.spec.collection,
            models.Batch(ids=ids.tolist(), vectors=vectors.tolist(), payloads=[{"group": g} for g in groups.tolist()]),
            wait=True,
        )

    def ready(self) -> None:
        """Upserts waited for (``wait=True``): searchable already."""

    def count(self) -> int:
        return int(self.client.count(self.spec.collection, exact=True).count)

    def check(self) -> None:
        if not self.client.collection_exists(self.spec.collection):
            raise ServiceError(f"{self.spec.where}: the collection does not exist (workload.vector.setup)")

    def query(self, vector: np.ndarray, k: int, group: int | None) -> list[int]:
        from qdrant_client import models
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        flt = None
        if group is not None:
            flt = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value=group))])
        params = models.SearchParams(exact=self.spec.index == "flat", **dict(self.spec.search_params))
        try:
            hits = self.client.query_points(
                self.spec.collection, query=vector.tolist(), limit=k, query_filter=flt, search_params=params,
                with_payload=False,
            )  # fmt: skip
        except ResponseHandlingException:
            raise RequestFailed("connect", self.spec.where) from None
        except UnexpectedResponse as exc:
            raise RequestFailed(f"http_{exc.status_code}") from None
        return [int(p.id) for p in hits.points]

    def close(self) -> None:
        self.client.close()


def connect(spec: VectorSearch) -> Qdrant:
    return Qdrant(spec)
