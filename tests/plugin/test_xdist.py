"""pytest-xdist must not change the numbers: two sweep points of one recipe on two workers share one
server, and their load phases never overlap (each would measure a share of the server otherwise)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import pytest
import yaml
from helpers import truth_recipe

pytestmark = pytest.mark.integration


def test_sweep_points_sharing_a_server_take_turns_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench="def test_llm(ubench_case, ubench):\n    ubench.run(ubench_case)\n")
    (pytester.path / "recipes").mkdir()
    recipe = truth_recipe("turns", load={"mode": "closed", "concurrency": [1, 2, 3]}, duration_s=1.5)
    (pytester.path / "recipes" / "turns.yaml").write_text(yaml.safe_dump(recipe))
    out = pytester.path / "out"
    res = pytester.runpytest_subprocess("--ubench-recipe=recipes/turns.yaml", f"--ubench-output={out}", "-n", "2",
                                        "-p", "no:cacheprovider")  # fmt: skip
    res.assert_outcomes(passed=3)
    res.stdout.fnmatch_lines(["*NOTE   under pytest-xdist, cases sharing a service took turns*"])
    windows = []
    for c in (1, 2, 3):
        prov = json.loads((out / f"turns-concurrency={c}" / "results.json").read_text())["provenance"]
        windows.append((datetime.fromisoformat(prov["started"]), datetime.fromisoformat(prov["finished"])))
    windows.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(windows)), windows
    # one server served them all (shared, not one each)
    assert [p.name for p in (out / "services").iterdir() if p.is_dir()] == ["turns"]


def test_workers_woken_by_a_marker_leave_no_server_behind(pytester: pytest.Pytester) -> None:
    """No --ubench-* option: only the workers' tests use the plugin (a marker names the recipe). The
    controller still ends their run: the server they shared is stopped, the sweep summary written."""
    from helpers import pid_alive

    pytester.makepyfile(test_bench="""
import pytest

@pytest.mark.ubench("recipes/marked.yaml")
def test_marked(ubench_case, ubench):
    ubench.run(ubench_case)
""")  # fmt: skip
    (pytester.path / "recipes").mkdir()
    recipe = truth_recipe("marked", load={"mode": "closed", "concurrency": [1, 2]}, duration_s=0.5)
    (pytester.path / "recipes" / "marked.yaml").write_text(yaml.safe_dump(recipe))
    res = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)
    (root,) = (pytester.path / "ubench-results").iterdir()  # one results root for both workers
    assert sorted(p.parent.name for p in root.glob("*/results.json")) == ["marked-concurrency=1",
                                                                         "marked-concurrency=2"]  # fmt: skip
    pid = json.loads((root / "services" / "marked" / "endpoint.json").read_text())["pid"]
    assert not pid_alive(pid)
    assert list((root / "sweeps").glob("*")), "the controller wrote the sweep summary"
