from __future__ import annotations

from pathlib import Path

import pytest

from pytest_ubench.recipes import loader
from pytest_ubench.recipes.sweep import expand

GOOD = """\
name: demo
service:
  url: http://127.0.0.1:8000
workload:
  protocol: openai-chat
  model: tiny
  load:
    mode: open
    rate: [2, 8]
  duration_s: 5
slo: ["ttft_ms.p95 < 500", "error_rate < 0.01"]
"""


def test_loads_a_valid_recipe(write_recipe):
    loaded = loader.load(write_recipe(GOOD))
    assert loaded.recipe.name == "demo"
    assert loaded.recipe.workload.load.rate == [2.0, 8.0]
    assert [s.path for s in loaded.recipe.slos()] == ["ttft_ms.p95", "error_rate"]
    assert len(loaded.sha256) == 64


def test_error_names_file_line_and_field(write_recipe):
    path = write_recipe(GOOD.replace("rate: [2, 8]", "rate: -3"))
    with pytest.raises(loader.RecipeError) as err:
        loader.load(path)
    assert str(err.value) == f"{path}:9: workload.load.rate: input should be greater than 0, got -3"


def test_error_inside_a_sweep_list_names_the_element(write_recipe):
    path = write_recipe(GOOD.replace("rate: [2, 8]", "rate:\n      - 2\n      - -3"))
    with pytest.raises(loader.RecipeError) as err:
        loader.load(path)
    assert str(err.value) == f"{path}:11: workload.load.rate[1]: input should be greater than 0, got -3"


def test_unknown_key_is_an_error_not_ignored(write_recipe):
    path = write_recipe(GOOD.replace("  duration_s: 5", "  duration_s: 5\n  durration: 7"))
    with pytest.raises(loader.RecipeError, match=r":11: workload.durration: extra inputs are not permitted"):
        loader.load(path)


def test_unknown_slo_metric_is_a_recipe_error(write_recipe):
    path = write_recipe(GOOD.replace('"error_rate < 0.01"', '"ttft.p95 < 3"'))
    with pytest.raises(loader.RecipeError, match=r":11: slo\[1\]: unknown metric 'ttft.p95'"):
        loader.load(path)


def test_invalid_yaml_names_the_line(write_recipe):
    path = write_recipe(GOOD.replace("  model: tiny", "  model: [tiny"))
    with pytest.raises(loader.RecipeError, match=rf"^{path}:\d+: invalid YAML"):
        loader.load(path)


def test_yaml_is_loaded_safely(write_recipe, tmp_path):
    marker = tmp_path / "pwned"
    path = write_recipe(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(loader.RecipeError, match="invalid YAML"):
        loader.load(path)
    assert not marker.exists()


def test_service_needs_command_or_url(write_recipe):
    path = write_recipe(GOOD.replace("  url: http://127.0.0.1:8000", "  port: auto"))
    with pytest.raises(loader.RecipeError, match=r":3: service: give exactly one of 'command'"):
        loader.load(path)


def test_mode_and_load_fields_must_agree(write_recipe):
    path = write_recipe(GOOD.replace("mode: open", "mode: closed"))
    with pytest.raises(loader.RecipeError, match=r"workload.load: closed loop needs 'concurrency'"):
        loader.load(path)


def test_overrides_merge_and_errors_point_at_the_override_file(write_recipe, tmp_path):
    base = write_recipe(GOOD)
    over = tmp_path / "over.yaml"
    over.write_text("workload:\n  duration_s: 2\n  load:\n    rate: 4\n")
    loaded = loader.load(base, [over])
    assert loaded.recipe.workload.duration_s == 2
    assert loaded.recipe.workload.load.rate == 4
    assert loaded.recipe.workload.load.mode == "open"  # untouched keys survive the merge
    over.write_text("workload:\n  duration_s: -1\n")
    with pytest.raises(loader.RecipeError) as err:
        loader.load(base, [over])
    assert str(err.value).startswith(f"{over}:2: workload.duration_s: input should be greater than 0")


def test_found_by_name_on_the_config_dir(write_recipe, monkeypatch, tmp_path):
    write_recipe(GOOD, name="demo")
    monkeypatch.setenv("UBENCHAI_CONFIG_DIR", str(tmp_path / "recipes"))
    assert loader.find("demo") == tmp_path / "recipes" / "demo.yaml"
    assert loader.available()[0].ref == "demo"
    with pytest.raises(loader.RecipeError, match="recipe 'nope' not found"):
        loader.find("nope")


def test_found_as_users_type_them_through_subfolders(tmp_path, monkeypatch):
    """By path, stem, ``name:`` and folder/stem, subfolders included, each kind among its own kind."""
    site, mine = tmp_path / "site", tmp_path / "mine"
    files = {
        site / "llm.yaml": GOOD.replace("name: demo", "name: llm"),
        site / "hpc" / "llm.yaml": GOOD.replace("name: demo", "name: llm-hpc"),
        site / "hpc" / "deep" / "fio-lustre.yaml": GOOD.replace("name: demo", "name: lustre"),
        site / "clusters" / "hpc.yaml": "name: hpc\npartition: gpu\n",
        site / "profiles" / "other.yaml": "kind: cluster\nname: other\n",
        site / "monitors" / "watch.yaml": "name: watch\nquery_sets: [node]\n",
        mine / "hpc" / "llm.yaml": GOOD.replace("name: demo", "name: my-llm"),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setenv("UBENCHAI_CONFIG_DIR", f"{mine}:{site}")
    monkeypatch.chdir(tmp_path)  # no ./recipes
    assert loader.find("llm") == site / "llm.yaml"  # the top folder's file answers to its stem first
    assert loader.find("hpc/llm") == mine / "hpc" / "llm.yaml"  # an earlier directory shadows a later one
    assert loader.find("my-llm") == mine / "hpc" / "llm.yaml"  # by name:
    assert loader.find("fio-lustre") == loader.find("lustre") == loader.find("hpc/deep/fio-lustre")
    assert loader.find("hpc/deep/fio-lustre.yaml") == site / "hpc" / "deep" / "fio-lustre.yaml"  # below a dir
    assert loader.find(str(site / "llm.yaml")) == site / "llm.yaml"
    assert loader.load_cluster("hpc").partition == "gpu"  # a cluster by stem, not the benchmark folder hpc/
    assert loader.load_cluster("other").name == "other"  # kind: cluster outside clusters/
    assert loader.load_monitor("watch").query_sets == ["node"]
    with pytest.raises(loader.RecipeError, match="cluster profile 'llm' not found"):
        loader.load_cluster("llm")  # a benchmark recipe is not a cluster profile
    (site / "b").mkdir()
    (site / "b" / "fio-lustre.yaml").write_text(GOOD)
    with pytest.raises(loader.RecipeError, match="'fio-lustre' is ambiguous: b/fio-lustre, hpc/deep/fio-lustre"):
        loader.find("fio-lustre")
    with pytest.raises(loader.RecipeError, match="did you mean hpc/llm"):
        loader.find("hpc/lm")
    refs = [(e.folder, e.ref, e.kind) for e in loader.available()]
    assert refs[0] == (".", "llm", "benchmark")
    assert ("profiles", "profiles/other", "cluster") in refs and ("monitors", "monitors/watch", "monitor") in refs
    assert [r[0] for r in refs] == sorted((r[0] for r in refs), key=lambda f: (f != ".", f))  # grouped by folder


def test_validate_knows_each_kind_by_its_own_schema(tmp_path, monkeypatch, capsys):
    from pytest_ubench.cli import main

    d = tmp_path / "recipes"
    (d / "clusters").mkdir(parents=True)
    (d / "clusters" / "c.yaml").write_text("name: c\npartition: gpu\n")
    (d / "clusters" / "bad.yaml").write_text("name: bad\ngpu_flag: nvidia\n")
    (d / "m.yaml").write_text("kind: monitor\nname: m\nquery_sets: [vllm]\n")
    (d / "r.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    assert main(["recipe", "validate", "c", "m", "demo", str(d / "clusters" / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["c: ok (cluster profile)", "m: ok (monitor recipe)", "demo: ok (2 cases)",
                                f"{d / 'clusters' / 'c.yaml'}: ok (cluster profile)"]  # fmt: skip
    assert main(["recipe", "validate", "bad"]) == 2
    assert f"{d / 'clusters' / 'bad.yaml'}:2: gpu_flag: input should be 'gres' or 'gpus'" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(loader.RecipeError, match="recipe file not found"):
        loader.load(tmp_path / "absent.yaml")


def test_sweep_expands_to_readable_case_ids(write_recipe):
    cases = expand(loader.load(write_recipe(GOOD)))
    assert [c.id for c in cases] == ["demo-rate=2", "demo-rate=8"]
    assert [c.load.rate for c in cases] == [2.0, 8.0]


def test_a_single_point_is_one_case(write_recipe):
    text = GOOD.replace("mode: open", "mode: closed").replace("rate: [2, 8]", "concurrency: 4")
    (case,) = expand(loader.load(write_recipe(text)))
    assert case.id == "demo-concurrency=4"
    assert case.load.concurrency == 4


def test_shipped_recipes_are_valid():
    """Every file under recipes/, subfolders included, by its own kind's schema."""
    from pytest_ubench.recipes import catalog

    shipped = catalog.entries([Path(__file__).parents[2] / "recipes"])
    assert {e.kind for e in shipped} == {"benchmark", "cluster", "monitor"}
    assert len(shipped) == len(list(Path(__file__).parents[2].joinpath("recipes").rglob("*.yaml")))
    for e in shipped:
        if e.kind == "benchmark":
            assert expand(loader.load(e.path))
        else:
            assert loader.load_as(loader.SCHEMAS[e.kind], e.path).name == e.name


def test_monitor_recipe_errors_are_located(write_recipe, tmp_path):
    path = tmp_path / "mon.yaml"
    path.write_text("name: m\ninterval_s: 1\nquery_sets: [llamacpp, nginx]\n")
    with pytest.raises(loader.RecipeError, match=rf"^{path}:3: query_sets\[1\]: input should be 'llamacpp'"):
        loader.load_monitor(path)


def test_each_sweep_point_gets_its_own_reproducible_prompts():
    from pytest_ubench.load.dataset import Lengths, synthetic

    def texts(stream: str) -> list[str]:
        return [p.text for p in synthetic(8, Lengths("fixed", 32), Lengths("fixed", 4), seed=1, stream=stream)]

    a = texts("x-concurrency=1")
    assert a == texts("x-concurrency=1")
    assert not set(a) & set(texts("x-concurrency=4"))
    assert all(len(p) == 32 for p in a)


def test_set_merges_one_typed_value_after_the_override_files(write_recipe, tmp_path):
    base = write_recipe(GOOD)
    over = tmp_path / "over.yaml"
    over.write_text("workload:\n  duration_s: 2\n")
    sets = [loader.setting("workload.duration_s=7.5", "--set"), loader.setting("workload.load.rate=[1, 3]", "--set"),
            loader.setting("workload.model='5'", "--set")]  # fmt: skip
    loaded = loader.load(base, [over], settings=sets)
    w = loaded.recipe.workload
    assert w.duration_s == 7.5 and w.load.rate == [1, 3] and w.model == "5" and w.load.mode == "open"
    assert [c.id for c in expand(loaded)] == ["demo-rate=1", "demo-rate=3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workload.duration_s=-1", "--ubench-set workload.duration_s=-1: workload.duration_s: input should be greater "
         "than 0"),
        ("workload.nope=1", "--ubench-set workload.nope=1: workload.nope: extra inputs are not permitted"),
        ("workload.duration_s", "--ubench-set workload.duration_s: expected PATH=VALUE"),
        ("workload..x=1", "--ubench-set workload..x=1: expected PATH=VALUE"),
        ("workload.model=[1", "--ubench-set workload.model=[1: the value is not YAML"),
    ],
)  # fmt: skip
def test_a_bad_set_names_the_option_as_typed(write_recipe, text, message):
    with pytest.raises(loader.RecipeError) as err:
        loader.load(write_recipe(GOOD), settings=[loader.setting(text, "--ubench-set")])
    assert str(err.value).startswith(message), str(err.value)
