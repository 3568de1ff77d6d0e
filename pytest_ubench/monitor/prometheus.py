"""Prometheus deployed by the harness, scraping the services under test.

Targets go through file-based service discovery (one JSON file per target, written atomically),
so a service deployed later is scraped without a restart. Readiness of the monitoring is not the
server's ``/-/ready`` alone: load starts only once every target has been scraped successfully.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from loguru import logger
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from ..metrics.files import write_json
from ..metrics.server_queries import duration
from ..orchestrators.base import Deployment, Orchestrator, ServiceError, ServiceState
from ..orchestrators.health import deploy_healthy
from ..recipes.deployment import Container, HealthCheck, ServiceSpec
from ..recipes.schema import Monitor


class MonitoringError(ServiceError):
    """Prometheus could not be started, or a target never became scrapeable."""


def image_for(orchestrator: Orchestrator, monitor: Monitor | None, name: str) -> str | None:
    """The image a monitoring part runs from: the recipe's (``monitor.images``), else the cluster
    profile's (``monitor_images``); None: its binary on PATH."""
    given: str | None = getattr(monitor.images, name) if monitor is not None else None
    return given or orchestrator.monitor_image(name)


def runnable(
    orchestrator: Orchestrator, name: str, binaries: tuple[str, ...], monitor: Monitor | None = None
) -> tuple[str, str | None] | None:
    """How a monitoring part runs under this placement: (executable, image) from its image (nodes without
    the binary, MeluXina: :func:`image_for`), else (binary on PATH, None); None: neither."""
    image = image_for(orchestrator, monitor, name)
    if image is not None:
        return binaries[-1], image
    found = next((b for b in map(shutil.which, binaries) if b), None)
    return (found, None) if found else None


def container(image: str | None, *paths: Path) -> dict[str, Any]:
    """A ServiceSpec's container part for a monitoring image, binding the host paths it reads and writes."""
    if image is None:
        return {}
    return {"runtime": "apptainer", "container": Container(image=image, binds=[str(p) for p in paths])}


@dataclass
class Prometheus:
    deployment: Deployment
    config_dir: Path
    interval_s: float
    orchestrator: Orchestrator

    @classmethod
    def start(
        cls,
        orchestrator: Orchestrator,
        root: Path,
        interval_s: float,
        retention: str,
        binary: str,
        detach: bool = False,
        image: str | None = None,
    ) -> Prometheus:
        """Start Prometheus with a generated config and an empty target directory; ``image``: from that
        image (Apptainer), ``binary`` being its executable there. It binds loopback here; on a cluster
        every address of its node, since this harness, on the login node, queries it (a workstation
        reaches it through the ssh tunnel ``monitor start`` prints)."""
        # Absolute: Prometheus resolves relative file_sd paths against the config file's directory.
        config_dir = (root / "prometheus").resolve()
        (config_dir / "targets").mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": duration(interval_s), "scrape_timeout": duration(interval_s),
                       "evaluation_interval": duration(interval_s)},
            "scrape_configs": [{
                "job_name": "ubench",
                "file_sd_configs": [{"files": [str(config_dir / "targets" / "*.json")], "refresh_interval": "1s"}],
            }],
        }  # fmt: skip
        (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        spec = ServiceSpec(
            command=[binary, f"--config.file={config_dir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={config_dir / 'data'}", "--web.listen-address={host}:{port}",
                     f"--storage.tsdb.retention.time={retention}"],
            host="0.0.0.0" if orchestrator.remote else "127.0.0.1",
            health=HealthCheck(path="/-/ready", timeout_s=30),
            **container(image, config_dir),
        )  # fmt: skip
        dep = deploy_healthy(orchestrator, spec, "prometheus", config_dir, detach=detach)
        return cls(dep, config_dir, interval_s, orchestrator)

    @property
    def url(self) -> str:
        return self.deployment.endpoint.url

    def client(self) -> PrometheusConnect:
        # Local and loopback: one quick retry, not the library's default backoff of many seconds.
        return PrometheusConnect(url=self.url, disable_ssl=True, timeout=10, retry=Retry(total=1, backoff_factor=0.1))

    def alive(self) -> bool:
        return self.orchestrator.status(self.deployment) == ServiceState.RUNNING

    def add_target(self, name: str, host: str, port: int, metrics_path: str = "/metrics", scheme: str = "http") -> str:
        """Scrape ``host:port`` from now on; returns the instance label Prometheus will use."""
        instance = f"{host}:{port}"
        group = [{
            "targets": [instance],
            "labels": {"job": name, "__metrics_path__": metrics_path, "__scheme__": scheme},
        }]  # fmt: skip
        write_json(self._target_file(name, instance), group)
        return instance

    def remove_target(self, name: str, host: str, port: int) -> None:
        """Stop scraping ``host:port`` (a service replaced by a fresh one on another port)."""
        self._target_file(name, f"{host}:{port}").unlink(missing_ok=True)

    def _target_file(self, name: str, instance: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}-{instance}")
        return self.config_dir / "targets" / f"{safe}.json"

    def wait_scraped(self, job: str, instance: str, timeout_s: float) -> None:
        """Block until the target has been scraped successfully; fail naming it otherwise."""
        deadline = time.monotonic() + timeout_s
        last = "not discovered yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise MonitoringError(f"monitoring: Prometheus exited (code {self.deployment.exit_code})")
            try:
                targets = self.client().get_targets()["activeTargets"]
            except (PrometheusApiClientException, OSError, ValueError) as exc:
                last = f"Prometheus API: {exc}"
                targets = []
            for t in targets:
                if t["labels"].get("job") == job and t["labels"].get("instance") == instance:
                    if t["health"] == "up":
                        logger.info("prometheus scrapes {} ({})", job, instance)
                        return
                    last = f"{t['health']}: {t.get('lastError') or 'not scraped yet'}"
            time.sleep(0.25)
        raise MonitoringError(f"monitoring: target {job} ({instance}) not scraped within {timeout_s:g} s: {last}")

    def range_series(self, query: str, start: float, end: float) -> list[tuple[float, float]]:
        """One series (the first, if a query returns several) sampled every scrape interval."""
        # The library rounds start and end to whole seconds; its params override them, so the
        # window is queried to the millisecond.
        data = self.client().custom_query_range(
            query,
            datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC),
            duration(self.interval_s),
            params={"start": f"{start:.3f}", "end": f"{end:.3f}"},
        )
        if not data:
            return []
        return [(float(t), float(v)) for t, v in data[0]["values"] if math.isfinite(float(v))]

    def instant_by(self, query: str, at: float, label: str) -> dict[str, float]:
        """An instant vector as ``{value of label: value}`` (a histogram's buckets ``by (le)``)."""
        data = self.client().custom_query(query, params={"time": f"{at:.3f}"})
        return {str(s["metric"].get(label)): float(s["value"][1]) for s in data}

    def instant(self, query: str, at: float) -> float | None:
        data = self.client().custom_query(query, params={"time": f"{at:.3f}"})
        if not data:
            return None
        value = float(data[0]["value"][1])
        return value if math.isfinite(value) else None


def window_metrics(prom: Prometheus, queries: dict[str, str], start: float, end: float) -> dict[str, Any]:
    """Evaluate each named query over [start, end]: min, mean, max, last and the series."""
    out: dict[str, Any] = {}
    for name, query in queries.items():
        try:
            series = prom.range_series(query, start, end)
        except (PrometheusApiClientException, OSError, ValueError) as exc:
            out[name] = {"query": query, "error": str(exc), "series": []} | dict.fromkeys(
                ("min", "mean", "max", "last")
            )
            continue
        values = [v for _, v in series]
        out[name] = {
            "query": query,
            "min": min(values) if values else None,
            "mean": sum(values) / len(values) if values else None,
            "max": max(values) if values else None,
            "last": values[-1] if values else None,
            "series": [[round(t, 3), v] for t, v in series],
        }
    return out
