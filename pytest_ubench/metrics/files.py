"""Files written atomically: through a temporary name and a rename, so a reader (or a run killed midway)
sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.

    On failure (a full disk) the temporary file is removed, so no partial file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
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
