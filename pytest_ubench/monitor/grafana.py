"""Grafana dashboard and provisioning for a run, built with grafana-foundation-sdk.

Grafana itself is not started here (no package on this machine's registries); the files are ready
for a Grafana pointed at the provisioning directory, and every panel's PromQL is checked against
the run's real Prometheus by the test suite. Rate windows use Grafana's ``$__rate_interval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery as PrometheusQuery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from ..metrics.files import write_text

DATASOURCE_UID = "ubench-prometheus"
UNITS = {"_per_s": "ops", "_bytes": "bytes", "_s": "s", "_watts": "watt", "usage": "percentunit", "busy": "percentunit"}


def _unit(name: str) -> str:
    return next((unit for suffix, unit in UNITS.items() if name.endswith(suffix)), "short")


def dashboard(title: str, uid: str, sections: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One row per recipe (section), one time series panel per named query."""
    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    builder = Dashboard(title).uid(uid).tags(["ubench", "generated"]).refresh("5s").time("now-15m", "now")
    for section, named in sections.items():
        builder = builder.with_row(Row(section))
        for name, expr in named.items():
            builder = builder.with_panel(
                Timeseries()
                .title(name)
                .unit(_unit(name))
                .datasource(source)
                .with_target(PrometheusQuery().expr(expr.replace("$rate", "$__rate_interval")).ref_id("A"))
            )
    encoded: dict[str, Any] = yaml.safe_load(JSONEncoder(sort_keys=True).encode(builder.build()))
    return encoded


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target, as a test or a check needs them."""
    return [(p["title"], t["expr"]) for p in dash["panels"] if p.get("type") != "row" for t in p.get("targets", [])]


def write_provisioning(root: Path, prometheus_url: str, dash: dict[str, Any]) -> Path:
    """Grafana provisioning files: a Prometheus datasource for this run and a dashboard provider."""
    grafana = root / "grafana"
    datasource = {"apiVersion": 1, "datasources": [{
        "name": "ubench Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "jsonData": {"timeInterval": "1s"},
    }]}  # fmt: skip
    provider = {"apiVersion": 1, "providers": [{
        "name": "ubench", "type": "file", "disableDeletion": False, "updateIntervalSeconds": 5,
        "options": {"path": str((grafana / "dashboards").absolute())},
    }]}  # fmt: skip
    write_text(grafana / "provisioning" / "datasources" / "ubench.yaml", yaml.safe_dump(datasource, sort_keys=False))
    write_text(grafana / "provisioning" / "dashboards" / "ubench.yaml", yaml.safe_dump(provider, sort_keys=False))
    target = grafana / "dashboards" / f"{dash['uid']}.json"
    write_text(target, JSONEncoder(sort_keys=True, indent=2).encode(dash))
    return target
