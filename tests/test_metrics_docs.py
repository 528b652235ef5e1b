"""docs/metrics.md and the Grafana dashboard say only what the code exposes.

The page's tables list every metric with its type, labels and help text; its
``hypercorn.toml`` passes the server's own checks; its Prometheus scrape
configuration and alert rules are valid YAML naming metrics that exist; the
dashboard is valid JSON whose queries name metrics that exist. That each of
those names also appears in a real scrape is checked by
``tests/test_metrics_serve.py`` (``names_in_a_scrape``).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from channels_runtime.metrics import catalog, core
from channels_runtime.server.config import check_setting

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana" / "channels-runtime.json"

assert catalog  # every metric defined

#: A metric name in PromQL (label names and values never start like this).
NAME = re.compile(r"\b((?:channels_runtime|process|python)_[a-z_]+)\b")
#: prometheus_client's own collectors (docs/metrics.md, "Processes").
STANDARD = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_objects_collected_total",
    "python_gc_collections_total",
}


def block(marker: str) -> str:
    """The fenced block right after ``<!-- metrics-test: MARKER -->`` on the page."""
    text = PAGE.read_text()
    match = re.search(rf"<!-- metrics-test: {marker} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert match, f"no block marked {marker!r} in {PAGE.name}"
    return match.group(1)


def sample_names(metric: core.Metric) -> set[str]:
    """The sample names ``metric`` is exposed under."""
    if isinstance(metric, core.Histogram):
        return {metric.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return {metric.name}


def known_names() -> set[str]:
    names = set(STANDARD)
    for metric in core.REGISTRY.values():
        names |= sample_names(metric)
    return names


def names_in(expression: str) -> set[str]:
    return set(NAME.findall(expression))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["definition"])
    return expressions


def dashboard_metric_names() -> set[str]:
    return {name for expression in dashboard_expressions() for name in names_in(expression)}


def alert_metric_names() -> set[str]:
    rules = yaml.safe_load(block("alert-rules"))["groups"][0]["rules"]
    return {name for rule in rules for name in names_in(rule["expr"])}


def test_the_tables_list_every_metric_as_defined() -> None:
    rows = re.findall(
        r"^\| `(channels_runtime_\w+)` \| (\w+) \| ([^|]*) \| (.*) \|$",
        PAGE.read_text(),
        re.M,
    )
    documented = {name: (kind, labels.strip(), meaning) for name, kind, labels, meaning in rows}
    assert len(documented) == len(rows), "a metric is listed twice"
    assert set(documented) == set(core.REGISTRY)
    for name, metric in core.REGISTRY.items():
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "—"
        assert documented[name] == (metric.kind, labels, metric.documentation), name


def test_the_toml_example_passes_the_servers_checks() -> None:
    settings = tomllib.loads(block("toml"))
    assert "metrics_bind" in settings
    for key, value in settings.items():
        check_setting(key, value, source="docs/metrics.md")


def test_the_scrape_configuration_is_valid() -> None:
    config = yaml.safe_load(block("scrape-config"))
    (job,) = config["scrape_configs"]
    assert job["job_name"]
    (targets,) = job["static_configs"]
    for target in targets["targets"]:
        check_setting("metrics_bind", target, source="docs/metrics.md")


def test_the_alert_rules_are_valid_and_name_real_metrics() -> None:
    rules: list[dict[str, Any]] = yaml.safe_load(block("alert-rules"))["groups"][0]["rules"]
    assert len(rules) >= 4
    known = known_names()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"ChannelsRuntime\w+", rule["alert"])
        assert rule["expr"].count("(") == rule["expr"].count(")")
        used = names_in(rule["expr"])
        assert used, rule
        assert used <= known, used - known
    topics = " ".join(rule["expr"] for rule in rules)
    for needed in ("process_max_fds", "layer_channel_full_total", "redis_unavailable"):
        assert needed in topics


def test_the_page_queries_name_real_metrics() -> None:
    queries = re.findall(r"^\* [^`]*: `([^`]+)`", PAGE.read_text(), re.M)
    assert len(queries) >= 4
    for query in queries:
        assert names_in(query) <= known_names(), query


def test_the_dashboard_names_only_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "channels-runtime"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = dashboard_metric_names()
    assert used <= known_names(), used - known_names()
    # Every metric the runtime defines has a panel.
    for metric in core.REGISTRY.values():
        assert sample_names(metric) & used, f"{metric.name} is on no panel"


@pytest.mark.parametrize("expression", dashboard_expressions())
def test_dashboard_queries_are_balanced(expression: str) -> None:
    for opening, closing in ("()", "{}", "[]"):
        assert expression.count(opening) == expression.count(closing), expression


def test_the_page_is_in_the_navigation() -> None:
    assert re.search(r"^\s+- Metrics: metrics\.md$", (ROOT / "mkdocs.yml").read_text(), re.M)
