"""The gRPC service of our own tests, on grpcio's asyncio server: ``ubench.test.Echo`` (echo.proto)
with a unary ``Say`` and a server-streaming ``Stream`` that reply after the delays the request asks
for, so a client's TTFT and inter-message figures can be checked against what the server did. Server
reflection is on, so clients can work without the .proto:

    python -m pytest_ubench.testing.grpcserver --port 50051 [--host 127.0.0.1] [--no-reflection]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from ..interrupts import stopped

PROTO = Path(__file__).with_name("echo.proto")
SERVICE = "ubench.test.Echo"


async def serve(host: str, port: int, reflection: bool) -> None:
    import grpc
    from google.protobuf import message_factory

    from ..protocols.grpc import compile_proto, pool_from

    pool = pool_from(compile_proto(PROTO))
    svc = pool.FindServiceByName(SERVICE)
    request_class = message_factory.GetMessageClass(svc.methods_by_name["Say"].input_type)
    reply_class = message_factory.GetMessageClass(svc.methods_by_name["Say"].output_type)

    async def say(request: Any, context: Any) -> Any:
        await asyncio.sleep(request.delay_ms / 1000.0)
        return reply_class(text=request.text, index=0, payload=b"x" * request.size)

    async def stream(request: Any, context: Any) -> Any:
        await asyncio.sleep(request.delay_ms / 1000.0)
        for i in range(request.count):
            if i:
                await asyncio.sleep(request.interval_ms / 1000.0)
            yield reply_class(text=request.text, index=i, payload=b"x" * request.size)

    codec = {"request_deserializer": request_class.FromString, "response_serializer": reply_class.SerializeToString}
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Say": grpc.unary_unary_rpc_method_handler(say, **codec),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, **codec),
    })  # fmt: skip
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    if reflection:
        from grpc_reflection.v1alpha import reflection as refl

        refl.enable_server_reflection([SERVICE, refl.SERVICE_NAME], server, pool=pool)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await stopped()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-reflection", action="store_true")
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port, not args.no_reflection))


if __name__ == "__main__":
    main()
