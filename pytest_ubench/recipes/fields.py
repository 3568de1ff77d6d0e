"""The field types recipes share, and the strict base model of every part (protocols' parts too)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]


def _not_only_dots(name: str) -> str:
    if not name.strip("."):
        raise ValueError(f"{name!r} is not a name: it would point at a directory above")
    return name


# A name that becomes a file or directory name (recipes, profiles, monitors): never "." or "..".
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$"), AfterValidator(_not_only_dots)]
PositiveInt = Annotated[int, Field(gt=0)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a recipe must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Values that end up on ``#SBATCH`` lines, which sbatch parses itself (no shell quoting there): only
# characters that cannot end a line or open a quote are accepted.
SlurmWord = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.,:@%+=/-]+$")]
SbatchOption = Annotated[str, Field(pattern=r"^--[a-z][a-z-]*(=[A-Za-z0-9_.,:@%+=/-]+)?$")]


ByteSize = Annotated[str | int, Field(description="bytes, or with a unit: 64KiB, 1MiB, 8MB")]


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_bytes(value: object) -> int:
    """``64KiB``, ``1MB``, ``4096``: a size in bytes; anything else is a recipe error naming the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if m is None or m.group(2).upper() not in _UNITS or int(m.group(1)) <= 0:
        raise ValueError(f"not a size: {value!r} (a number of bytes, or with B, KB, MB, GB, KiB, MiB, GiB)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def without_credentials(url: str) -> str:
    """The URL with any ``user:password@`` taken out: what may be written to results, logs and the console."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent as written (request splitting, bytes HTTP/1.1 cannot carry), or None."""
    if not _TOKEN.fullmatch(name):
        return f"header name {name!r} is not an HTTP token"
    if any(c in value for c in "\r\n\0"):
        return f"header {name}: a value must be one line"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"header {name}: the value has characters HTTP/1.1 headers cannot carry (Latin-1 only)"
    return None
