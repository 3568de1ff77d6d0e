"""Bad input gets one clear line naming file, line and field (and the documented exit code); nothing is
written where it should not be, and nothing of it reaches a shell, a header or a path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_ubench.orchestrators.slurm import script
from pytest_ubench.recipes import loader
from pytest_ubench.recipes.sweep import expand

BASE = {
    "name": "r",
    "service": {"url": "http://127.0.0.1:9"},
    "workload": {"load": {"mode": "closed", "concurrency": 1}},
}


def _write(tmp_path: Path, data: dict | str, name: str = "r") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("name", [".", ".."])
def test_names_that_point_above_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(loader.RecipeError, match=r"r\.yaml:1: name: .* is not a name: it would point at a directory"):
        loader.load(_write(tmp_path, {**BASE, "name": name}))


def test_swept_values_become_safe_path_parts(tmp_path: Path) -> None:
    wl = {"protocol": "vector", "stream": False, "load": {"mode": "closed", "concurrency": 1},
          "vector": {"engine": "chroma", "search_params": {"ef": ["../up", "a/b", 7]}}}  # fmt: skip
    ids = [c.id for c in expand(loader.load(_write(tmp_path, {**BASE, "workload": wl})))]
    assert ids == ["r-concurrency=1-ef=.._up", "r-concurrency=1-ef=a_b", "r-concurrency=1-ef=7"]
    assert all("/" not in i for i in ids)


def test_an_environment_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    data = {**BASE, "service": {"command": ["x"], "env": {"FOO\n": "1"}}}
    with pytest.raises(
        loader.RecipeError, match=r"r\.yaml:\d+: service\.env: string should match pattern .*got 'FOO\\n'"
    ):
        loader.load(_write(tmp_path, data))
    assert script._ENV_NAME.fullmatch("FOO\n") is None and script._SBATCH_SAFE.fullmatch("gpu\n") is None


@pytest.mark.parametrize(
    ("headers", "said"),
    [({"X-A": "a\r\nInjected: 1"}, "a value must be one line"), ({"X A": "x"}, "is not an HTTP token"),
     ({"X-A": "naïve ✓"}, "Latin-1 only")],
)  # fmt: skip
def test_headers_that_would_split_a_request_are_refused(headers: dict, said: str, tmp_path: Path) -> None:
    wl = {
        "protocol": "http",
        "stream": False,
        "load": {"mode": "closed", "concurrency": 1},
        "http": {"headers": headers},
    }
    with pytest.raises(loader.RecipeError, match=rf"r\.yaml:\d+: workload\.http\.headers: .*{said}"):
        loader.load(_write(tmp_path, {**BASE, "workload": wl}))


def test_yaml_aliases_that_blow_up_or_loop_are_refused(tmp_path: Path) -> None:
    loop = "name: r\nservice: {url: 'http://h:1'}\nworkload:\n  load: {concurrency: 1}\n  params: &p [*p]\n"
    with pytest.raises(loader.RecipeError, match="a YAML alias makes a value contain itself"):
        loader.load(_write(tmp_path, loop))
    bomb = "name: r\nservice: {url: 'http://h:1'}\nworkload:\n  load: {concurrency: 1}\n  params:\n"
    bomb += "    a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for prev, cur in zip("abcdef", "bcdefg", strict=True):
        bomb += f"    {cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]\n"
    with pytest.raises(loader.RecipeError, match="more than 100,000 values once its YAML aliases are expanded"):
        loader.load(_write(tmp_path, bomb))


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: r\n# caf\xe9\nworkload: {}\n")
    with pytest.raises(loader.RecipeError, match=r"r\.yaml:2: not UTF-8 text \(byte 0xe9\)"):
        loader.load(path)


def test_an_error_in_the_base_recipe_is_not_blamed_on_the_override(tmp_path: Path) -> None:
    base = _write(
        tmp_path, "name: r\nservice: {url: 'http://h:1'}\nworkload:\n  duration_s: -1\n  load: {concurrency: 1}\n"
    )
    over = _write(tmp_path, {"workload": {"warmup_s": 1}}, "over")
    with pytest.raises(loader.RecipeError) as caught:
        loader.load(base, [over])
    assert str(caught.value).startswith(f"{base}:4: workload.duration_s:")


def test_an_unset_variable_is_a_usage_error(tmp_path: Path) -> None:
    data = {**BASE, "service": {"command": [sys.executable, "-c", "pass", "${UB_SURELY_NOT_SET}"]}}
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(_write(tmp_path, data)),
           "--output", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "environment variable UB_SURELY_NOT_SET is not set" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("face", ["cli", "pytest"])
def test_a_baseline_of_no_runs_is_a_usage_error(face: str, tmp_path: Path) -> None:
    recipe = str(_write(tmp_path, BASE))
    if face == "cli":
        cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", recipe, "--save-baseline",
               str(tmp_path / "bl"), "--baseline-runs", "0"]  # fmt: skip
        code = 2
    else:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path), f"--ubench-recipe={recipe}",
               f"--ubench-save-baseline={tmp_path / 'bl'}", "--ubench-baseline-runs=0"]  # fmt: skip
        code = 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert "baseline runs: 0 is not a count of runs" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "bl").exists()


@pytest.mark.parametrize("face", ["cli", "pytest"])
def test_a_bad_set_is_a_usage_error_naming_the_option(face: str, tmp_path: Path) -> None:
    recipe = str(_write(tmp_path, BASE))
    if face == "cli":
        cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", recipe, "--set", "workload.rate"]
        code, flag = 2, "--set"
    else:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path), f"--ubench-recipe={recipe}",
               "--ubench-set=workload.rate"]  # fmt: skip
        code, flag = 4, "--ubench-set"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert f"{flag} workload.rate: expected PATH=VALUE" in done.stderr and "Traceback" not in done.stderr
