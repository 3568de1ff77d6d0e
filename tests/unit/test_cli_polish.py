"""The CLI as a CI script and a person meet it: help on every flag, exit codes and environment in --help,
-v anywhere, JSON from every list, a sentence instead of an empty table, a hint for a mistyped name."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from pytest_ubench.cli import _parser, main

REPO = Path(__file__).resolve().parents[2]


def _leaves(parser: argparse.ArgumentParser, path: str = "ubenchai") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:  # argparse has no public walk of subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _leaves(sub, f"{path} {name}")
    return out


def test_every_flag_and_argument_says_what_it_is_for() -> None:
    missing = [f"{where}: {a.option_strings or a.dest}" for where, p in _leaves(_parser()) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]  # fmt: skip
    assert not missing, missing


def test_help_lists_the_exit_codes_and_every_environment_variable_the_code_reads() -> None:
    text = _parser().format_help()
    read = set(re.findall(r"UBENCHAI_[A-Z_]+", "".join(p.read_text() for p in (REPO / "pytest_ubench").rglob("*.py"))))
    assert read and not [v for v in read if v not in text]
    for code in ("0", "1", "2", "3", "4", "130", "141"):
        assert re.search(rf"^  {code} ", text, re.M), code


def test_old_spellings_still_work_but_are_not_shown(tmp_path: Path) -> None:
    run = next(p for where, p in _leaves(_parser()) if where == "ubenchai client run")
    shown = run.format_help()
    assert "--override FILE" in shown and "--overrides" not in shown and "--config" not in shown
    args = run.parse_args(["--recipe", "r", "--overrides", "a.yaml", "--override", "b.yaml", "--config", "c"])
    assert args.overrides == [Path("a.yaml"), Path("b.yaml")] and args.cluster == "c"


def test_lists_are_json_on_request_and_a_sentence_when_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    for command, sentence in (("server", "no services started"), ("client", "no client runs"),
                              ("monitor", "no monitors running")):  # fmt: skip
        assert main([command, "list", "-v"]) == 0  # -v after the command, too
        assert sentence in capsys.readouterr().out
        assert main([command, "list", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
    monkeypatch.chdir(REPO)
    assert main(["recipe", "list", "--json"]) == 0
    recipes = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert recipes["llm-inference"]["protocol"] == "openai-chat" and recipes["redis"]["protocol"] == "redis"


def test_a_mistyped_name_gets_a_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["client", "run", "--recipe", "llm-inferense", "--dry-run"]) == 2
    assert "did you mean llm-inference?" in capsys.readouterr().err
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    assert main(["client", "run", "--recipe", "llm-inference", "--target", "llm-inference-2026", "--dry-run"]) == 2
    assert "target 'llm-inference-2026': not a URL and no service with that id" in capsys.readouterr().err
