"""Chroma through ``chromadb``'s HTTP client (``chroma run`` locally, a Chroma server on a cluster).

Chroma indexes with HNSW only: ``index_params``/``search_params`` are its ``hnsw`` configuration keys
(``max_neighbors``, ``ef_construction``, ``ef_search``, ...).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ...load.http import RequestFailed
from ...orchestrators.base import ServiceError
from ..base import secret
from . import VectorSearch

SPACES = {"l2": "l2", "cosine": "cosine", "ip": "ip"}


class Chroma:
    def __init__(self, spec: VectorSearch) -> None:
        import chromadb

        if spec.index == "flat":
            raise ServiceError("workload.vector.index: chroma has no flat (exact) index; use hnsw or auto")
        self.spec = spec
        url = urlsplit(spec.url)
        token = secret(spec.api_key_env, "workload.vector.api_key_env")
        headers = {"x-chroma-token": token} if token else None
        try:
            self.client: Any = chromadb.HttpClient(
                host=url.hostname or "127.0.0.1", port=url.port or 8000, ssl=url.scheme == "https", headers=headers
            )
            self.client.heartbeat()
        except Exception as exc:  # chromadb wraps transport errors in several types
            raise ServiceError(f"{spec.where}: cannot connect: {exc}") from None
        self.collection: Any = None

    def create(self, recreate: bool) -> bool:
        from chromadb.errors import NotFoundError

        name = self.spec.collection
        if not recreate:
            try:
                self.collection = self.client.get_collection(name)
                return False
            except NotFoundError:
                pass
        with contextlib.suppress(NotFoundError):
            self.client.delete_collection(name)
        hnsw = {"space": SPACES[self.spec.metric], **dict(self.spec.index_params), **dict(self.spec.search_params)}
        try:
            self.collection = self.client.create_collection(name, configuration={"hnsw": hnsw})
        except ValueError as exc:  # chromadb's own errors derive from it (a bad configuration key)
            raise ServiceError(f"{self.spec.where}: {exc}") from None
        return True

    def insert(self, ids: np.ndarray, vectors: np.ndarray, groups: np.ndarray) -> None:
        self.collection.add(
            ids=[str(i) for i in ids.tolist()], embeddings=vectors, metadatas=[{"group": g} for g in groups.tolist()]
        )

    def ready(self) -> None:
        """Chroma's single-node server indexes on write: nothing to wait for."""

    def count(self) -> int:
        return int(self.collection.count())

    def check(self) -> None:
        from chromadb.errors import NotFoundError

        try:
            self.collection = self.client.get_collection(self.spec.collection)
        except NotFoundError:
            raise ServiceError(f"{self.spec.where}: the collection does not exist (workload.vector.setup)") from None

    def query(self, vector: np.ndarray, k: int, group: int | None) -> list[int]:
        import httpx

        try:
            r = self.collection.query(
                query_embeddings=vector[None, :], n_results=k, where=None if group is None else {"group": group},
                include=[],
            )  # fmt: skip
        except httpx.TransportError:
            raise RequestFailed("connect", self.spec.where) from None
        return [int(i) for i in r["ids"][0]]

    def close(self) -> None:
        self.client = None


def connect(spec: VectorSearch) -> Chroma:
    return Chroma(spec)
