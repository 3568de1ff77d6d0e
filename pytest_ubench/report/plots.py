"""Plots as inline SVG (matplotlib's SVG backend draws text as paths): nothing to fetch at view time.

matplotlib is imported on first use: the pytest plugin imports this module, and every pytest run
would otherwise pay for it.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@functools.cache
def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "figure.dpi": 96, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3})  # fmt: skip
    return plt


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG goes inline


# Beyond these, a plot shows the shape through a sample: an SVG of millions of points helps nobody.
CURVE_POINTS = 2000
SCATTER_POINTS = 20000


def cdfs(series: dict[str, np.ndarray]) -> str:
    """Latency CDFs, one panel per metric."""
    shown = {k: v for k, v in series.items() if len(v)}
    fig, axes = _pyplot().subplots(
        1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1), 2.6), squeeze=False, layout="constrained"
    )
    for ax, (name, values) in zip(axes[0], shown.items(), strict=False):
        xs = np.sort(values)
        ranks = np.arange(len(xs))
        if len(xs) > CURVE_POINTS:  # a long run's millions of points: the curve at evenly spaced ranks
            ranks = np.linspace(0, len(xs) - 1, CURVE_POINTS).round().astype(np.int64)
            xs = xs[ranks]
        ys = (ranks + 1) / len(values)
        ax.plot(xs, ys, lw=1.5)
        ax.set_title(f"{name} CDF")
        ax.set_xlabel("ms")
        ax.set_ylim(0, 1)
    return svg(fig)


def over_time(
    start_s: np.ndarray, ttft_ms: np.ndarray, done_s: np.ndarray, warmup_end_s: float, duration_s: float
) -> str:
    """TTFT of each request by its start time, and completions per second; warm-up shaded."""
    fig, (a, b) = _pyplot().subplots(1, 2, figsize=(8, 2.6), layout="constrained")
    for ax in (a, b):
        ax.axvspan(0, warmup_end_s, color="0.85", label="warm-up")
        ax.set_xlabel("s since start")
    step = max(1, len(start_s) // SCATTER_POINTS)  # a long run: every k-th request, evenly over the run
    a.scatter(start_s[::step], ttft_ms[::step], s=4)
    a.set_title("TTFT over time" if step == 1 else f"TTFT over time (every {step}th request)")
    a.set_ylabel("ms")
    seconds = max(int(np.ceil(duration_s)), 1)
    counts, edges = np.histogram(done_s, bins=np.arange(seconds + 1))
    b.step(edges[:-1], counts, where="post")
    b.set_title("completed requests per second")
    a.legend(loc="upper right")
    return svg(fig)


def _latency(ax: Any, xs: Sequence[float], latencies: Mapping[str, Sequence[float]], against: str) -> None:
    """The right-hand panel of a sweep: each latency figure against what was swept."""
    for name, values in latencies.items():
        ax.plot(xs, values, marker="o", label=name)
    ax.set_title(f"latency vs {against}")
    ax.set_ylabel("ms")
    ax.legend()


def sweep(loads: Sequence[float], axis: str, throughput: Sequence[float], latencies: Mapping[str, Sequence[float]],
          knee: int | None) -> str:  # fmt: skip
    """Throughput and latency against the swept load, the knee marked."""
    fig, (a, b) = _pyplot().subplots(1, 2, figsize=(8, 2.8), layout="constrained")
    a.plot(loads, throughput, marker="o")
    a.set_title("throughput vs load")
    a.set_ylabel("requests/s")
    _latency(b, loads, latencies, "load")
    for ax in (a, b):
        ax.set_xlabel(axis)
        if knee is not None:
            ax.axvline(loads[knee], color="tab:red", ls="--", lw=1, label="knee")
    if knee is not None:
        a.annotate(
            "knee", (loads[knee], throughput[knee]), textcoords="offset points", xytext=(5, -12), color="tab:red"
        )
    return svg(fig)


def scaling(replicas: Sequence[int], throughput: Sequence[float], unit: str, latencies: Mapping[str, Sequence[float]]
            ) -> str:  # fmt: skip
    """Throughput against the replica count beside linear scaling from the smallest count, and latency."""
    fig, (a, b) = _pyplot().subplots(1, 2, figsize=(8, 2.8), layout="constrained")
    ideal = [throughput[0] * n / replicas[0] for n in replicas]
    a.plot(replicas, throughput, marker="o", label="measured")
    a.plot(replicas, ideal, ls="--", color="tab:gray", label="linear")
    a.set_title("throughput vs replicas")
    a.set_ylabel(unit)
    a.legend()
    _latency(b, replicas, latencies, "replicas")
    for ax in (a, b):
        ax.set_xlabel("replicas")
        ax.set_xticks(list(replicas))
    return svg(fig)


def series(named: dict[str, Sequence[Sequence[float]]], t0: float) -> str:
    """Server-side series (Prometheus), small multiples."""
    shown = {k: v for k, v in named.items() if v}
    cols = 3
    rows = max((len(shown) + cols - 1) // cols, 1)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(9, 2.2 * rows), squeeze=False, layout="constrained")
    for ax, (name, points) in zip(axes.flat, shown.items(), strict=False):
        ts = np.asarray([p[0] for p in points]) - t0
        ax.plot(ts, [p[1] for p in points], lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("s")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    return svg(fig)
