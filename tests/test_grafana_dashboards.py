"""
The Grafana dashboards under deploy/grafana/ query what `open-metrics` really exports: every
metric name a panel names is in a scrape, and every label it filters or groups by is a label of
that metric. (tests/integration/test_prometheus.py runs each query through a real Prometheus.)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from debusine.server.db.models import Collection, User, WorkRequest
from debusine.testing.playground import Playground

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "grafana").glob("*.json"))

METRIC = re.compile(r"\bdebusine_[a-z0-9_]+\b")
# `by (a, b)`, `on (a)`, `without (a)` and `{a="x", b=~"y"}`.
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"(debusine_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_there_are_dashboards_for_each_topic() -> None:
    titles = " ".join(
        panel["title"].lower()
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    )
    for topic in (
        "request latency",
        "pending work requests by task and architecture",
        "celery queue",
        "workers by state",
        "slots by pool",
        "scheduling pass duration",
        "dispatch latency",
        "file store size",
    ):
        assert topic in titles


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_dashboard_is_importable_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # The data source is chosen on import (a variable), not a uid of someone's Grafana.
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_every_query_names_exported_metrics_and_labels(
    path: Path,
    playground: Playground,
    user: User,
    start_work_request: Callable[..., WorkRequest],
) -> None:
    # Something of each kind, so that every family has series.
    worker = playground.create_connected_worker(
        metadata={"system:architectures": ["amd64"], "noop:version": 1}
    )
    start_work_request(playground.create_work_request(created_by=user), worker)
    playground.create_artifact()
    Collection.objects.create(
        name="trixie", category="debian:suite", workspace=playground.workspace
    )
    playground.create_file_store("limited", max_size=10)
    response = Client().get("/api/1.0/open-metrics/")
    assert response.status_code == 200
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)

    for title, expr in panel_queries(json.loads(path.read_text())):
        names = set(METRIC.findall(expr))
        assert names, f"{title}: no debusine metric in {expr!r}"
        unknown = names - set(labels)
        assert not unknown, f"{title}: {sorted(unknown)} are not exported"
        known_labels = set().union(*(labels[name] for name in names))
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert label in known_labels, f"{title}: no label {label!r} on {sorted(names)}"
        for name, matchers in MATCHERS.findall(expr):
            for label in MATCHER_LABEL.findall(matchers):
                assert label in labels[name], f"{title}: no label {label!r} on {name}"
