"""The alert rules, their runbooks and their unit tests stay in step:
every alert links to a section of docs/runbooks.md that exists, and the
promtool tests (run by .ci/run) see every alert both fire and stay quiet."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from unimatch.domain import metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
TESTS = ROOT / "ops" / "prometheus" / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def _alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _anchors() -> set[str]:
    # GitHub's anchors: the heading lower-cased, spaces to dashes, punctuation dropped.
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_links_to_its_runbook_section() -> None:
    anchors = _anchors()
    for name, rule in _alerts().items():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/runbooks.md", (name, url)
        assert anchor == name.lower(), (name, url)
        assert anchor in anchors, f"{name}: no section '{anchor}' in docs/runbooks.md"
        assert rule["labels"]["severity"] in {"page", "ticket"}, name


def test_every_runbook_section_belongs_to_an_alert() -> None:
    assert _anchors() == {name.lower() for name in _alerts()}


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS.glob("*.yml"):
        spec = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == ["../alerts.yml"], path
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - fired == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "unimatch.json"
_METRIC = re.compile(r"\bunimatch_[a-z_]+\b")


def _declared_series() -> set[str]:
    """Every series name unimatch/domain/metrics.py exposes."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base, kind = value._name, value._type
            names |= {
                "counter": {f"{base}_total"},
                "histogram": {f"{base}_bucket", f"{base}_count", f"{base}_sum"},
            }.get(kind, {base})
    return names


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_alerts_and_dashboard_use_only_declared_metrics() -> None:
    declared = _declared_series()
    used = set(_METRIC.findall(RULES.read_text()))
    for expr in _dashboard_exprs():
        used |= set(_METRIC.findall(expr))
    assert used - declared == set()


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(_dashboard_exprs())
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
