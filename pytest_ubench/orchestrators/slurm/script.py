"""Batch scripts for a service: ``#SBATCH`` resources from the recipe and the cluster profile, a port
picked on the node, the endpoint file, and a trap that takes the service's whole process group down.

Everything from a recipe is single-quoted (``shlex.quote``) or restricted by the schema to characters
that cannot break an ``#SBATCH`` line; ``${VAR}`` references become ``"${VAR}"`` and are resolved by the
job's own environment, so no secret is written into the script.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from ..._version import __version__
from ...recipes.deployment import ClusterProfile, Container, Resources, ServiceSpec
from .. import apptainer, keys
from ..base import ServiceError
from ..keys import WILDCARD
from ..placeholders import expand, shell_word
from ..ports import PORT_FLOOR

_SBATCH_SAFE = re.compile(r"[A-Za-z0-9_.,:@%+=/-]+")  # whole values only: fullmatch
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_TIME = "01:00:00"  # a job's --time when neither recipe, profile nor SBATCH_TIMELIMIT says
STOP_GRACE_S = 3  # SIGTERM to SIGKILL for the service's group; well inside Slurm's KillWait

_FINISH = """\
svc_pid=
helpers=()
groups() { printf '%%s\\n' ${svc_pid:+"$svc_pid"} "${helpers[@]}"; }
finish() {
  local rc=$? pid alive
  trap - EXIT TERM INT
  for pid in $(groups); do kill -TERM -- "-$pid" 2>/dev/null; done
  for _ in $(seq 1 %(ticks)d); do
    alive=
    for pid in $(groups); do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in $(groups); do kill -KILL -- "-$pid" 2>/dev/null; done
  printf '%%s\\n' "$rc" >"$run_dir/exit_code.tmp" && mv -f "$run_dir/exit_code.tmp" "$run_dir/exit_code"
  exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
"""

# Below the node's ephemeral range, for the reason given at ``local.free_port``.
_PICK_PORT = """\
%(var)s=
read -r eph_floor _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_floor=32768
span=$((eph_floor - %(floor)d)); [ "$span" -ge 1000 ] || span=30000
for _ in $(seq 1 200); do
  candidate=$((%(floor)d + RANDOM %% span))
  case " ${taken:-} " in *" $candidate "*) continue ;; esac  # picked already, not bound yet
  if ! (exec 3<>"/dev/tcp/%(probe)s/$candidate") 2>/dev/null; then %(var)s=$candidate; break; fi
done
[ -n "$%(var)s" ] || { echo "ubench: no free port found on $(hostname)" >&2; exit 1; }
taken="${taken:-} $%(var)s"
"""

# The image was pulled on the submitting node (``apptainer.pull``); the job only runs it, with whichever
# of apptainer and singularity the node has once the profile's modules are loaded.
_RUNTIME = """\
if command -v apptainer >/dev/null 2>&1; then ctr=apptainer; ctr_env=APPTAINERENV_
elif command -v singularity >/dev/null 2>&1; then ctr=singularity; ctr_env=SINGULARITYENV_
else
  echo "ubench: neither apptainer nor singularity on $(hostname) (load its module in the cluster profile)" >&2
  exit 1
fi
"""
_IMAGE = """\
%(var)s=%(sif)s
if [ ! -f "$%(var)s" ]; then
  printf 'ubench: image %%s not on %%s: pull it on the login node (ubenchai image pull) ' "$%(var)s" "$(hostname)" >&2
  echo "into an image cache the nodes share" >&2
  exit 1
fi
"""

# A sidecar: started on the head node before the service, its address written for the harness to scrape.
_SIDECAR = """\
setsid %(command)s </dev/null >>"$run_dir/%(name)s.log" 2>&1 &
helpers+=($!)
printf '{"host": "%%s", "port": %%s, "node": "%%s"}\\n' "$endpoint_host" "$%(port)s" "$head_node" \\
  >"$run_dir/%(name)s.json.tmp" && mv -f "$run_dir/%(name)s.json.tmp" "$run_dir/%(name)s.json"
"""
# ... and on every other node of a multi-node service, by an srun step there that picks its port on
# that node, writes <name>-<node>.json and becomes the sidecar.
_REMOTE_SIDECAR = """\
for node in "${nodes[@]:1}"; do
  setsid srun --overlap --nodes=1 --ntasks=1 --nodelist="$node" bash -c %(inner)s </dev/null \\
    >>"$run_dir/%(name)s-$node.log" 2>&1 &
  helpers+=($!)
done
"""
_REMOTE_INNER = """\
set -u
node=${SLURMD_NODENAME:-$(hostname)}
%(pick)s%(endpoint)s
printf '{"host": "%%s", "port": %%s, "node": "%%s"}\\n' "$endpoint_host" "$%(port)s" "$node" \\
  >"$run_dir/%(name)s-$node.json.tmp" && mv -f "$run_dir/%(name)s-$node.json.tmp" "$run_dir/%(name)s-$node.json"
exec %(command)s"""

_NODES = """\
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
nnodes=${#nodes[@]}
"""

_LAUNCH = """\
setsid %(command)s </dev/null &
svc_pid=$!
fmt='{"host": "%%s", "port": %%s, "url": "%(scheme)s://%%s:%%s", "pid": %%s, '
fmt+='"job_id": "%%s", "node": "%%s", "slurm_node": "%%s"}\\n'
printf "$fmt" "$endpoint_host" "$port" "$url_host" "$port" "$svc_pid" "${SLURM_JOB_ID:-}" "$(hostname)" \\
  "${SLURMD_NODENAME:-}" >"$run_dir/endpoint.json.tmp"
mv -f "$run_dir/endpoint.json.tmp" "$run_dir/endpoint.json"
echo "ubench: service started on $(hostname):$port (pid $svc_pid)" >&2
wait "$svc_pid"
exit $?
"""


# A job started by a harness watches the heartbeat file the harness touches; when it goes stale the
# harness is gone (killed), and the job stops itself (the EXIT trap takes the service down).
_HEARTBEAT = """\
heartbeat=%(file)s
touch "$heartbeat"
( while sleep %(every)s && kill -0 "$$" 2>/dev/null; do
    age=$(( $(date +%%s) - $(stat -c %%Y "$heartbeat" 2>/dev/null || echo 0) ))
    if [ "$age" -gt %(limit)s ]; then
      echo "ubench: no heartbeat from the harness for $age s: stopping the job" >&2
      kill -TERM "$$"
      exit 0
    fi
  done ) &
"""


def heartbeat(file: str, limit_s: float) -> str:
    """The watcher of a heartbeat file (``file``: a shell word) that stops the job past ``limit_s``."""
    return _HEARTBEAT % {"file": file, "every": f"{max(1.0, min(5.0, limit_s / 3)):g}", "limit": f"{limit_s:.0f}"}


def _sbatch_value(what: str, value: str) -> str:
    if not _SBATCH_SAFE.fullmatch(value):
        raise ServiceError(f"{what} {value!r} cannot go on an #SBATCH line (use letters, digits and _.,:@%+=/-)")
    return value


# sbatch options users set for all their jobs in their shell (``SBATCH_*``, and ``SALLOC_*`` for the
# same option when no SBATCH_ one is set). sbatch would let these variables override the script's own
# lines, so the runner strips them and the script carries them instead, below the recipe and the profile.
INHERITED = {
    "ACCOUNT": "account",
    "PARTITION": "partition",
    "QOS": "qos",
    "RESERVATION": "reservation",
    "TIMELIMIT": "time",
    "CONSTRAINT": "constraint",
    "WCKEY": "wckey",
}


def inherited(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The sbatch options the environment sets: option -> (value, the variable it came from)."""
    found: dict[str, tuple[str, str]] = {}
    for key, option in INHERITED.items():
        var = next((f"{p}{key}" for p in ("SBATCH_", "SALLOC_") if environ.get(f"{p}{key}")), None)
        if var is not None:
            found[option] = (environ[var], var)
    return found


def _from_shell(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    shell = inherited(environ)
    if environ.get("UBENCHAI_SLURM_ACCOUNT"):
        shell["account"] = (environ["UBENCHAI_SLURM_ACCOUNT"], "UBENCHAI_SLURM_ACCOUNT")
    return shell


def site_values(profile: ClusterProfile, environ: Mapping[str, str]) -> dict[str, str]:
    """``{project}`` and ``{scratch}`` as the profile and the submitting shell give them (the project id
    defaults to the account: on MeluXina they are one)."""
    values: dict[str, str] = {}
    project = profile.project or profile.account or _from_shell(environ).get("account", ("", ""))[0]
    if project:
        values["project"] = project
    if profile.scratch:
        values["scratch"] = _site_path(profile, "scratch", profile.scratch, values)
    return values


def _site_path(profile: ClusterProfile, field: str, template: str, values: dict[str, str]) -> str:
    try:
        return expand(template, values)
    except ServiceError:
        known = ", ".join(f"{{{k}}}" for k in values) or "none"
        raise ServiceError(
            f"cluster profile {profile.name!r}: {field} {template!r} names a value that is not known here (known: "
            f"{known}; the project id comes from 'project' or the account)"
        ) from None


def image_cache(profile: ClusterProfile, environ: Mapping[str, str]) -> Path:
    """The profile's image cache, else ``UBENCHAI_IMAGE_CACHE``, else ``{scratch}/ubenchai/images``, else ~/.cache."""
    values = site_values(profile, environ)
    if profile.image_cache:
        return apptainer.cache_dir(_site_path(profile, "image_cache", profile.image_cache, values))
    if "scratch" in values and not environ.get("UBENCHAI_IMAGE_CACHE"):
        return Path(values["scratch"]) / "ubenchai" / "images"
    return apptainer.cache_dir()


def directives(
    r: Resources, job_name: str, log: Path, profile: ClusterProfile, environ: Mapping[str, str]
) -> list[str]:
    """``#SBATCH`` lines. Each option from the first that sets it: the recipe's ``resources``, the cluster
    profile, ``UBENCHAI_SLURM_ACCOUNT`` (account only), ``SBATCH_*``, ``SALLOC_*``; else Slurm's default."""
    shell = _from_shell(environ)
    used: list[str] = []

    def pick(option: str, *chosen: str | None) -> str | None:
        value = next((c for c in chosen if c), None)
        if value is not None:
            return value
        if option in shell:
            value, var = shell[option]
            used.append(var)
            return _sbatch_value(f"{option} (from {var})", value)
        return None

    opts = [
        f"--job-name={_sbatch_value('job name', job_name)}",
        f"--output={_sbatch_value('run directory', str(log))}",
        f"--nodes={r.nodes}",
        f"--ntasks-per-node={r.tasks_per_node}",
    ]
    if r.cpus_per_task:
        opts.append(f"--cpus-per-task={r.cpus_per_task}")
    if r.memory:
        opts.append(f"--mem={r.memory}")
    opts.append(f"--time={pick('time', r.time, profile.time) or DEFAULT_TIME}")
    account = pick("account", profile.account)
    if account:
        opts.append(f"--account={_sbatch_value('account', account)}")
    elif profile.account_required:
        raise ServiceError(
            f"cluster profile {profile.name!r} requires an account: set 'account' in the profile, "
            "UBENCHAI_SLURM_ACCOUNT or SBATCH_ACCOUNT"
        )
    chosen = {
        "partition": pick("partition", r.partition, profile.gpu_partition if r.gpus else None, profile.partition),
        "qos": pick("qos", r.qos, profile.qos),
        "reservation": pick("reservation", r.reservation, profile.reservation),
        "constraint": pick("constraint"),
        "wckey": pick("wckey"),
    }
    opts += [f"--{option}={value}" for option, value in chosen.items() if value]
    if r.gpus:
        opts.append(f"--gres=gpu:{r.gpus}" if profile.gpu_flag == "gres" else f"--gpus-per-node={r.gpus}")
    opts += [*profile.sbatch, *r.sbatch]
    lines = [f"#SBATCH {o}" for o in opts]
    if used:
        lines.append(f"# from the submitting shell: {', '.join(used)}")
    return lines


def _preamble(profile: ClusterProfile, sbatch: list[str], comment: list[str]) -> list[str]:
    """Shebang, ``#SBATCH`` lines, a comment, strict mode and the profile's modules: every job's start."""
    lines = [profile.shebang, *sbatch, *comment, "set -uo pipefail"]
    if profile.modules:
        names = " ".join(shlex.quote(m) for m in profile.modules)
        # a module that is missing stops the job here, not later with "apptainer: command not found"
        lines.append(
            f'module load {names} || {{ echo "ubench: module load {names} failed on $(hostname)" >&2; exit 1; }}'
        )
    return lines


def render(
    spec: ServiceSpec,
    *,
    name: str,
    job_name: str,
    run_dir: Path,
    profile: ClusterProfile,
    python: str,
    environ: Mapping[str, str] | None = None,
    heartbeat_s: float = 0.0,
    key_file: Path | None = None,
) -> str:
    """The whole batch script for one service; ``run_dir`` must be on a filesystem the node shares.
    ``heartbeat_s``: stop when the harness has not touched ``run_dir/heartbeat`` for that long (0: never).
    ``key_file``: the service's API key (``service.api_key_env``), read by the job, never written here."""
    assert spec.command is not None
    q = shlex.quote
    wildcard = spec.host in WILDCARD
    lines = _preamble(
        profile,
        directives(spec.resources, job_name, run_dir / "service.log", profile, environ or {}),
        [
            f"# Generated by pytest-ubench {__version__} for service {name!r}. Recipe values are quoted;",
            "# ${VAR} references are read from the job's environment at run time and never stored here.",
        ],
    )
    lines += [f"run_dir={q(str(run_dir))}", f"bind_host={q(spec.host)}"]
    lines.append(_FINISH % {"ticks": STOP_GRACE_S * 10})
    if heartbeat_s:
        lines.append(heartbeat('"$run_dir/heartbeat"', heartbeat_s))
    probe = "127.0.0.1" if wildcard else "$bind_host"
    if spec.port == "auto":
        lines.append(_PICK_PORT % {"var": "port", "probe": probe, "floor": PORT_FLOOR})
    else:
        lines.append(f"port={int(spec.port)}; taken=$port")
    if spec.key_front:  # the server on its node's loopback, the front on the service's address and port
        lines.append(_PICK_PORT % {"var": "port_backend", "probe": "127.0.0.1", "floor": PORT_FLOOR})
    if wildcard:
        lines += ["endpoint_host=$(hostname)", 'url_host="$endpoint_host"']
    else:
        lines += ['endpoint_host="$bind_host"', f"url_host={q(f'[{spec.host}]' if ':' in spec.host else spec.host)}"]

    site = site_values(profile, environ or {})
    fragments = {
        "host": "127.0.0.1" if spec.key_front else '"$bind_host"',
        "port": '"$port_backend"' if spec.key_front else '"$port"',
        "python": q(python),
        "run_dir": '"$run_dir"',
        "head": '"$head_node"',
        "nodes": '"$nnodes"',
        "replica": q(str(spec.replica.index if spec.replica else 0)),
        **{k: q(v) for k, v in site.items()},
    }
    prefix: list[str] = []
    env_name = "{}"  # how an exported variable is named: as is, or with the runtime's prefix

    def sif_of(image: str) -> Path:
        return apptainer.image_path(profile.images.get(image, image), image_cache(profile, environ or {}))

    if spec.container is not None or any(sc.image for sc in spec.sidecars):
        lines.append(_RUNTIME.rstrip("\n"))
    if spec.multinode is not None:
        lines.append(_NODES)
    else:
        lines += ["head_node=$(hostname)", "nnodes=1"]
    if spec.multinode is not None and spec.sidecars:  # what the srun steps of remote sidecars read
        lines.append("export ctr ctr_env run_dir bind_host")
    # sidecars first: they must not inherit the service's environment (its API key)
    for sc in spec.sidecars:
        var = f"port_{sc.name}"
        lines.append(_PICK_PORT % {"var": var, "probe": probe, "floor": PORT_FLOOR})
        words = [shell_word(a, {"host": '"$bind_host"', "port": f'"${var}"'}) for a in sc.command]
        if sc.image is not None:
            lines += [_IMAGE % {"var": f"sif_{sc.name}", "sif": q(str(sif_of(sc.image)))}, f"export sif_{sc.name}"]
            run = apptainer.command(Container(image=sc.image), Path("-"), spec.resources.gpus)
            words = ['"$ctr"', *(q(w) for w in run[1:-1]), f'"$sif_{sc.name}"', *words]
        lines.append(_SIDECAR % {"command": " ".join(words), "name": sc.name, "port": var})
        if spec.multinode is not None:
            endpoint = "endpoint_host=$(hostname)" if wildcard else 'endpoint_host="$bind_host"'
            pick = _PICK_PORT % {"var": var, "probe": probe, "floor": PORT_FLOOR}
            inner = _REMOTE_INNER % {"pick": pick, "endpoint": endpoint, "port": var, "name": sc.name,
                                     "command": " ".join(words)}  # fmt: skip
            lines.append(_REMOTE_SIDECAR % {"inner": q(inner), "name": sc.name})
    if spec.container is not None:
        sif = sif_of(spec.container.image)
        lines.append(_IMAGE % {"var": "sif", "sif": q(str(sif))})
        binds = [_site_path(profile, "bind", b, site) for b in profile.binds]
        container = spec.container.model_copy(update={"binds": [expand(b, site) for b in spec.container.binds]})
        words = apptainer.command(container, sif, spec.resources.gpus, binds)
        lines += [f"mkdir -p {q(d)}" for d in apptainer.scratch_sources(container.binds, site.get("scratch"))]
        prefix = ['"$ctr"'] + [q(w) for w in words[1:-1]] + ['"$sif"']
        env_name = '"${{ctr_env}}{}"'

    def command(argv: list[str], node: str = '"$head_node"') -> str:
        """``node``: what ``{node}`` stands for where this command runs (a helper's own node)."""
        return " ".join(prefix + [shell_word(a, fragments | {"node": node}) for a in argv])

    for key, value in spec.env.items():
        if not _ENV_NAME.fullmatch(key):
            raise ServiceError(f"service env: {key!r} is not a valid environment variable name")
        lines.append(f"export {env_name.format(key)}={shell_word(value, fragments)}")
    if keys.keyed(spec) and key_file is None:
        raise ServiceError("service.api_key_env/key_front: no key file was made for this deployment")
    if spec.key_front:
        assert key_file is not None
        opened = [a for path in (spec.health.path, spec.metrics_path) if path for a in ("--open", path)]
        front = [python, "-m", "pytest_ubench.orchestrators.key_front", "--key-file", str(key_file), *opened]
        lines += [f'setsid {shlex.join(front)} --listen "$bind_host":"$port" --to 127.0.0.1:"$port_backend" '
                  '</dev/null >>"$run_dir/key-front.log" 2>&1 &', "helpers+=($!)"]  # fmt: skip
    if spec.api_key_env is not None:
        lines += [f'api_key=$(cat {q(str(key_file))}) || exit 1',
                  f'export {env_name.format(spec.api_key_env)}="$api_key"', "unset api_key"]  # fmt: skip
    if spec.workdir:
        lines.append(f"cd {shell_word(spec.workdir, fragments)} || exit 1")
    mn = spec.multinode
    if mn is not None:
        worker = command(mn.worker, node='"$node"')  # the loop's variable below
        if mn.head:
            lines += [f"setsid {command(mn.head)} </dev/null &", "helpers+=($!)"]
        lines += [
            'for node in "${nodes[@]:1}"; do',
            f'  setsid srun --overlap --nodes=1 --ntasks=1 --nodelist="$node" {worker} </dev/null &',
            "  helpers+=($!)",
            "done",
        ]
        if mn.settle_s:
            lines.append(f"sleep {mn.settle_s:g}")
        if mn.ready == "ray":
            check = (Path(__file__).parent / "ray_ready.py").read_text()
            nodes = '"$(IFS=,; echo "${nodes[*]}")"'
            lines.append(f"{' '.join(prefix)} python3 -c {q(check)} {nodes} {mn.ready_timeout_s:g} || exit 1".lstrip())
    scheme = "https" if spec.tls else "http"
    lines.append(_LAUNCH % {"command": command(spec.command), "scheme": scheme})
    return "\n".join(lines)


def render_clients(
    resources: Resources,
    *,
    job_name: str,
    out_dir: Path,
    profile: ClusterProfile,
    worker: list[str],
    environ: Mapping[str, str] | None = None,
    heartbeat_s: float = 0.0,
) -> str:
    """A job of load-client processes: one ``srun`` task per process, each running ``worker``; with
    ``heartbeat_s``, stopped when the harness has not touched ``out_dir/heartbeat`` for that long."""
    lines = _preamble(
        profile,
        directives(resources, job_name, out_dir / "clients.log", profile, environ or {}),
        [f"# Generated by pytest-ubench {__version__}: load clients; every task writes its own records."],
    )
    if not heartbeat_s:
        lines.append("exec srun --kill-on-bad-exit=1 " + shlex.join(worker))
        return "\n".join(lines)
    lines += ["trap 'kill -TERM \"$tasks\" 2>/dev/null; wait; exit 143' TERM",
              heartbeat(shlex.quote(str(out_dir / "heartbeat")), heartbeat_s),
              "srun --kill-on-bad-exit=1 " + shlex.join(worker) + " &", "tasks=$!", 'wait "$tasks"',
              'exit $?']  # fmt: skip
    return "\n".join(lines)
