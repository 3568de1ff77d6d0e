"""Per-deployment API keys for services that listen beyond loopback.

On a shared cluster a model server bound to ``0.0.0.0`` can be used (or loaded) by anyone on the network
during the benchmark. A recipe that names the variable its server reads a key from
(``service.api_key_env: VLLM_API_KEY``) gets a fresh key for every deployment. The key lives in a file of
the user's own (mode 0600, in the state directory, which a cluster's nodes share through ``$HOME``); the
batch job and the load clients read it from there, so it never appears in a script, on a command line,
in a log or in results. The file is removed when the deployment stops, and by the watchdog when the
harness dies first (a deployment left running on purpose keeps it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from loguru import logger

from ..recipes.deployment import ServiceSpec
from . import watchdog
from .base import ServiceError
from .registry import state_dir

WILDCARD = ("0.0.0.0", "::", "")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASS", "CREDENTIAL", "AUTH")


def unguarded(spec: ServiceSpec) -> bool:
    """A service started beyond loopback without a per-deployment key (credentials of the user's own, a
    MinIO password, do not count: they outlive the run, and the server's users may know them)."""
    return spec.command is not None and spec.host in WILDCARD and not keyed(spec)


def keyed(spec: ServiceSpec) -> bool:
    """Each deployment gets a key: the server checks it (``api_key_env``) or a front does (``key_front``)."""
    return spec.api_key_env is not None or spec.key_front


def for_service(spec: ServiceSpec, name: str, detach: bool) -> Path | None:
    """A new key file when the recipe asks for a key (one replica of several: the key they share); a warning
    when it listens beyond loopback without. Unless the deployment is to outlive the harness (``detach``),
    the file goes with the harness however it ends."""
    if keyed(spec) and spec.replica is not None and spec.replica.key_file is not None:
        return Path(spec.replica.key_file)
    if not keyed(spec):
        if unguarded(spec):
            logger.warning("{}: listens on {} without a per-deployment key: anyone who reaches the node can use "
                           "it (name the variable its server reads a key from in service.api_key_env, or set "
                           "service.key_front for a server without keys)",
                           name, spec.host or "*")  # fmt: skip
        return None
    folder = directory()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"{name}-{secrets.token_hex(8)}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_urlsafe(32))
    if not detach:
        watchdog.guard_file(path)
    return path


def directory() -> Path:
    """Where key files are kept: this user's state directory, shared by a cluster's nodes through $HOME."""
    return state_dir() / "keys"


def bearer(key_file: str | None) -> dict[str, str]:
    """The header that carries a deployment's key (none for a service without one)."""
    return {"Authorization": f"Bearer {read(key_file)}"} if key_file else {}


def read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ServiceError(f"the service's key file {path}: {exc.strerror or exc}") from None


def remove(path: str | Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)
        watchdog.release_file(path)


def discard(spec: ServiceSpec, path: Path | None) -> None:
    """A deployment that failed to start gives up its key, unless the key is its replicas' (they run on)."""
    if spec.replica is None or spec.replica.key_file is None:
        remove(path)
