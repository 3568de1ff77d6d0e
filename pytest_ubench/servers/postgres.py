"""A throwaway PostgreSQL server for benchmarks and tests: a fresh data directory, then the server.

    python -m pytest_ubench.servers.postgres --data DIR --host 127.0.0.1 --port 5433

The binaries come from the system (Debian's ``postgresql``: found in ``/usr/lib/postgresql/*/bin``).
PostgreSQL refuses to run as root, so as root the data directory is handed to the ``postgres`` user
and the server runs as that user. A password for the ``postgres`` role comes from ``UBENCH_PG_PASSWORD``
(scram authentication over TCP); without it, local trust. The server replaces this process (exec), so
stopping the service stops PostgreSQL. Not durable by default (``fsync=off``): it measures the database
engine, not this machine's disk; ``--durable`` keeps PostgreSQL's defaults.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        sys.exit(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


def _as_postgres_user() -> None:
    """Called in the child before exec: PostgreSQL will not run as root."""
    user = pwd.getpwnam("postgres")
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pytest_ubench.servers.postgres")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--durable", action="store_true", help="keep fsync and synchronous commit on")
    args = ap.parse_args(argv)
    root = os.geteuid() == 0
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    if root:
        user = pwd.getpwnam("postgres")
        for path in (data, *data.parents):
            if path == Path("/"):
                break
            os.chmod(path, os.stat(path).st_mode | 0o001)  # let the postgres user reach its directory
        os.chown(data, user.pw_uid, user.pw_gid)
    os.chmod(data, 0o700)
    password = os.environ.pop("UBENCH_PG_PASSWORD", None)
    if not (data / "PG_VERSION").exists():
        cmd = [binary("initdb"), "-D", str(data), "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]
        pwdir = None
        if password is not None:
            # initdb wants an empty data directory: the password file goes in a private sibling, removed below.
            pwdir = Path(tempfile.mkdtemp(prefix=".pgpw-", dir=data.parent))
            (pwdir / "pw").write_text(password)
            if root:
                for path in (pwdir, pwdir / "pw"):
                    os.chown(path, pwd.getpwnam("postgres").pw_uid, -1)
            cmd += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwdir / 'pw'}"]
        else:
            cmd += ["--auth=trust"]
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, preexec_fn=_as_postgres_user if root else None)
        finally:
            if pwdir is not None:
                shutil.rmtree(pwdir)
    # TCP only: a Unix socket path is limited to 107 bytes, which a deep results directory exceeds.
    server = [binary("postgres"), "-D", str(data), "-h", args.host, "-p", str(args.port), "-k", "",
              "-c", "max_connections=200"]  # fmt: skip
    if not args.durable:
        server += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    sys.stdout.flush()
    if root:
        _as_postgres_user()
    os.execv(server[0], server)


if __name__ == "__main__":
    main()
