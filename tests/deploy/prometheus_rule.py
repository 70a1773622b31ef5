"""The PrometheusRule of k8s/components/monitoring: prometheus/telescore.rules.yml, wrapped.

A test checks the two say the same; after changing the rules, rewrite it:
    .venv/bin/python tests/deploy/prometheus_rule.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "prometheus" / "telescore.rules.yml"
PROMETHEUS_RULE = REPO / "k8s" / "components" / "monitoring" / "prometheus-rule.yaml"
HEADER = """\
# Generated from prometheus/telescore.rules.yml (the thresholds and why are there) by
# tests/deploy/prometheus_rule.py; a test fails when the two differ. Do not edit by hand.
"""


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """Return the PrometheusRule holding `rules`' groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "telescore",
            "labels": {"app.kubernetes.io/name": "telescore", "release": "kube-prometheus-stack"},
        },
        "spec": {"groups": rules["groups"]},
    }


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the expressions) as literal blocks, as the rules file does."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _text)


def render() -> str:
    """Return the PrometheusRule file's text."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    document = prometheus_rule(rules)
    return HEADER + yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=100)


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(render())
