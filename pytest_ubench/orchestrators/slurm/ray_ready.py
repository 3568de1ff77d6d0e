"""Run by a multi-node service's job (``multinode.ready: ray``) on its head node, with the Python of the
service's environment (its container), not pytest-ubench's: so only Ray and the standard library here.

    python3 -c "<this file>" NODE[,NODE...] TIMEOUT_S

Exits 0 once Ray's own list of nodes (``ray.nodes()``, from the cluster's control store) has each named
node alive; 1 after TIMEOUT_S, naming the nodes that never joined, so the job's log says which node to
look at. Connecting is retried too: the head's Ray may not be up yet when the job asks first.
"""

import sys
import time


def main(names: list[str], timeout_s: float) -> int:
    import ray  # type: ignore[import-not-found]  # in the service's environment, not ours

    deadline = time.monotonic() + timeout_s
    want = set(names)
    alive: set[str] = set()
    connected = False
    while time.monotonic() < deadline:
        try:
            if not connected:
                ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
                connected = True
            alive = {str(n["NodeName"]) for n in ray.nodes() if n["Alive"]}
        except ConnectionError:
            pass  # the head's Ray is still starting
        if want <= alive:
            print(f"ubench: Ray cluster ready: {len(want)} nodes alive ({', '.join(sorted(want))})", file=sys.stderr)
            return 0
        time.sleep(1.0)
    missing = ", ".join(sorted(want - alive))
    where = "the head's Ray never answered" if not connected else f"alive: {', '.join(sorted(alive)) or 'none'}"
    print(f"ubench: Ray nodes not joined after {timeout_s:g} s: {missing} ({where})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].split(","), float(sys.argv[2])))
