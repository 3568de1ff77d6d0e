"""Where the plugin keeps its state on pytest's objects: light on purpose, imported by the plugin module
that every pytest run in the environment loads, used or not."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .metrics.results import CaseResult
    from .session import BenchmarkRun

RUN: pytest.StashKey[BenchmarkRun] = pytest.StashKey()  # on the config, once the run uses the plugin
RESULT: pytest.StashKey[CaseResult] = pytest.StashKey()  # on an item, once its case has run
