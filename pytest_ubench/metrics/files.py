"""Files written atomically: through a temporary name and a rename, so a reader (or a run killed midway)
sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.

    On failure (a full disk) the temporary file is removed, so no partial file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (not only the pid's: threads, and processes on other hosts of a shared
    # filesystem), created exclusively, with the permissions the umask gives (not mkstemp's 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    def put(fh: TextIO) -> None:
        fh.write(text)

    write_atomic(path, put)


def write_json(path: Path, obj: Any) -> None:
    def dump(fh: TextIO) -> None:
        json.dump(obj, fh, indent=2, allow_nan=False)
        fh.write("\n")

    write_atomic(path, dump)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def user_cache(name: str) -> Path:
    """A cache directory of this user's: ``UBENCHAI_CACHE_DIR`` (else ``$XDG_CACHE_HOME`` or ~/.cache, then
    ``ubenchai``) / ``name``, created mode 0700. One another user owns or can write to is refused: what is
    read from a cache must not be planted (a shared /tmp is never used)."""
    base = os.environ.get("UBENCHAI_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ubenchai"
    )
    path = Path(base).expanduser() / name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{path}: the cache directory is not this user's alone (owner or mode); not used")
    return path
