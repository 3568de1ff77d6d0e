"""The MinIO image double's server (see ./minio): moto's S3 emulator behind MinIO's liveness path."""

import argparse

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

p = argparse.ArgumentParser()
p.add_argument("--host", default="")
p.add_argument("--port", type=int, required=True)
args = p.parse_args()
s3 = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    if environ["PATH_INFO"] == "/minio/health/live":
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    return s3(environ, start_response)


run_simple(args.host or "0.0.0.0", args.port, app, threaded=True)
