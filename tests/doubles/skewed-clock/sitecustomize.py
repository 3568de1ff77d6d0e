"""TEST DOUBLE of nodes whose clocks are off: put on PYTHONPATH, Python imports it at every start. In a
load-client task (a Slurm task, SLURM_PROCID, running pytest-ubench's worker), ``time.time`` and
``time.time_ns`` read ahead by the milliseconds that $UBENCH_TEST_SKEW_MS ("50,-50": task 0 ahead 50 ms,
task 1 behind 50 ms) gives that task. Anywhere else (the harness, the service) it does nothing."""

import os
import sys
import time

_skews = os.environ.get("UBENCH_TEST_SKEW_MS")
_task = os.environ.get("SLURM_PROCID")
if _skews and _task is not None and "--recipe-json" in sys.argv:
    _values = [float(v) for v in _skews.split(",")]
    _ns = round(_values[int(_task) % len(_values)] * 1e6)
    _time_ns = time.time_ns
    time.time_ns = lambda: _time_ns() + _ns
    time.time = lambda: time.time_ns() / 1e9
