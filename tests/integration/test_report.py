"""The standalone report, read as a program (parsed HTML) and as a person would (headless Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import truth_recipe

from pytest_ubench.report import browser

pytestmark = pytest.mark.integration


class Page(HTMLParser):
    """Counts what the report is made of and collects every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.urls: list[str] = []
        self.meta: dict[str, str] = {}
        self.sections: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action", "data") and v]
        if tag == "meta" and a.get("http-equiv"):
            self.meta[a["http-equiv"] or ""] = a.get("content") or ""
        if tag == "section" and a.get("id"):
            self.sections.append(a["id"] or "")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real three-point sweep against the ground-truth server."""
    tmp = tmp_path_factory.mktemp("report")
    recipe = tmp / "r.yaml"
    recipe.write_text(
        json.dumps(truth_recipe("rep", duration_s=1.5, load={"mode": "closed", "concurrency": [1, 2, 4]}))
    )
    out = tmp / "out"
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output",
                           str(out)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_the_html_report_has_every_part_and_nothing_to_fetch(run_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "report", str(run_dir)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = Page()
    page.feed((run_dir / "report.html").read_text())
    assert page.sections == ["rep-concurrency=1", "rep-concurrency=2", "rep-concurrency=4"]
    # one sweep figure, then per case: CDFs and over-time
    assert page.tags["svg"] == 1 + 2 * 3
    assert page.tags["table"] >= 1 + 3 * 2  # overview, then SLOs and latency per case
    assert page.meta["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script" not in page.tags and "link" not in page.tags
    assert all(u.startswith(("#", "data:")) for u in page.urls), [u for u in page.urls if not u.startswith("#")][:5]


def test_chromium_renders_it_offline_and_prints_the_pdf(run_dir: Path, tmp_path: Path) -> None:
    if browser.find() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (ci/install-services installs it as root)")
        pytest.skip("no chromium on PATH")
    report = run_dir / "report.html"
    if not report.exists():
        subprocess.run([sys.executable, "-m", "pytest_ubench", "report", str(run_dir)], check=True, timeout=120)
    dom, requested = render(report, tmp_path / "a")
    rendered = Page()
    rendered.feed(dom)
    assert rendered.tags.get("svg", 0) == 7 and len(rendered.sections) == 3  # the browser built the whole page
    assert requested == [], requested  # the page asked for nothing but itself
    # The same check sees a page that does fetch (Chromium's own background calls are not the page's).
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    assert render(leaky, tmp_path / "b")[1] == ["http://example.invalid/x.png"]
    pdf = run_dir / "report.pdf"
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "report", str(run_dir), "--format", "pdf"],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    png = tmp_path / "first-screen.png"
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "report", str(run_dir), "--format", "png",
                           "--output", str(png)], capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    from PIL import Image

    with Image.open(png) as shot:
        assert shot.size == (1280, 1600)
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50  # text and plots, not a blank page


def render(page: Path, work: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built, and every URL the *page* requested (from Chromium's net log)."""
    binary = browser.find()
    assert binary is not None
    net_log = work / "net.json"
    done = subprocess.run(
        [binary, *browser.FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={net_log}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start_job
        and e["params"].get("initiator") != "not an origin"  # i.e. from a page
        and not e["params"].get("url", "file:").startswith(("file:", "data:"))
    ]
    return done.stdout, requested


def test_report_of_a_directory_without_results_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "no case results" in done.stderr
