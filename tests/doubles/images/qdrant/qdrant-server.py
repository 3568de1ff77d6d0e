"""The Qdrant image double's server (see ./qdrant): Qdrant's REST routes that qdrant-client calls for a
collection's create, upsert, count and query, answered by qdrant-client's local mode."""

import argparse
import os
import secrets
import time
from typing import Any

import uvicorn
from qdrant_client import QdrantClient, models
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

p = argparse.ArgumentParser()
p.add_argument("--storage", required=True)
p.add_argument("--host", default="0.0.0.0")
p.add_argument("--port", type=int, default=6333)
args = p.parse_args()
KEY = os.environ.get("QDRANT__SERVICE__API_KEY") or None
db = QdrantClient(path=args.storage)


def ok(result: Any, started: float) -> JSONResponse:
    return JSONResponse({"result": result, "status": "ok", "time": time.perf_counter() - started})


def guarded(handler: Any, wrapped: bool = True) -> Any:
    async def route(request: Request) -> JSONResponse:
        given = request.headers.get("api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if KEY and not secrets.compare_digest(given.encode(), KEY.encode()):
            return JSONResponse({"status": {"error": "Must provide an API key or an Authorization bearer token"}},
                                status_code=401)  # fmt: skip
        started = time.perf_counter()
        body = await request.json() if request.method in ("PUT", "POST") else None
        result = handler(request.path_params.get("name"), body)
        return ok(result, started) if wrapped else JSONResponse(result)

    return route


def create(name: str, body: dict[str, Any]) -> bool:
    spec = models.CreateCollection(**body)
    return bool(db.create_collection(name, vectors_config=spec.vectors, hnsw_config=spec.hnsw_config))


def upsert(name: str, body: dict[str, Any]) -> dict[str, Any]:
    points = models.PointsBatch(**body).batch if "batch" in body else models.PointsList(**body).points
    return db.upsert(name, points=points, wait=True).model_dump(mode="json")


def query(name: str, body: dict[str, Any]) -> dict[str, Any]:
    q = models.QueryRequest(**body)
    found = db.query_points(name, query=q.query, limit=q.limit or 10, query_filter=q.filter, search_params=q.params,
                            with_payload=q.with_payload or False)  # fmt: skip
    return found.model_dump(mode="json")


routes = [
    Route(
        "/",
        guarded(
            lambda _n, _b: {"title": "qdrant - vector search engine (test double)", "version": "1.12.4"}, wrapped=False
        ),
    ),
    Route("/collections", guarded(lambda _n, _b: db.get_collections().model_dump(mode="json"))),
    Route("/collections/{name}/exists", guarded(lambda n, _b: {"exists": db.collection_exists(n)})),
    Route("/collections/{name}", guarded(lambda n, b: create(n, b)), methods=["PUT"]),
    Route("/collections/{name}", guarded(lambda n, _b: db.delete_collection(n)), methods=["DELETE"]),
    Route("/collections/{name}/points", guarded(upsert), methods=["PUT"]),
    Route(
        "/collections/{name}/points/count",
        guarded(lambda n, b: {"count": db.count(n, exact=True).count}),
        methods=["POST"],
    ),
    Route("/collections/{name}/points/query", guarded(query), methods=["POST"]),
]
uvicorn.run(Starlette(routes=routes), host=args.host, port=args.port, log_level="warning")
