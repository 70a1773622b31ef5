"""`/metrics`: the loop's figures, read from MongoDB at each scrape, under the rules' names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.loop_records import EXPECTED, seed_loop
from tests.unit.app.conftest import CHAMPION_VERSION, FastApp
from tests.unit.app.test_app_metrics import _samples, _token

from telescore.app import deps
from telescore.core.loop_status import RELEASE_ACTIONS, WINDOW_VERDICTS
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.loop_status import LoopStatusReader
from telescore.serving.shipping import PredictionLogMetrics

RULES = Path(__file__).resolve().parents[3] / "prometheus" / "telescore.rules.yml"


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _seed(fast_app: FastApp) -> None:
    loop = fast_app.services.loop
    seed_loop(loop.monitoring, loop.releases, loop.outcomes)


def test_the_loop_s_figures_are_exported_as_recorded(fast_app: FastApp) -> None:
    # given the seeded story of the loop in the app's database
    _seed(fast_app)
    # when Prometheus scrapes the app
    samples = _samples(fast_app)
    # then each gauge holds the recorded figure
    gauges = {
        "telescore_monitor_last_run_timestamp_seconds": EXPECTED.last_run_at.timestamp(),
        "telescore_monitor_window_seconds": 3600.0,
        "telescore_monitor_window_predictions": EXPECTED.predictions,
        "telescore_monitor_label_coverage": EXPECTED.label_coverage,
        "telescore_monitor_drift_share": EXPECTED.drift_share,
        "telescore_monitor_roc_auc": EXPECTED.roc_auc,
        "telescore_monitor_calibration_gap": EXPECTED.calibration_gap,
        "telescore_monitor_degraded_windows_since_retrain": EXPECTED.degraded_in_a_row,
        "telescore_outcomes_pending": EXPECTED.pending_outcomes,
    }
    for name, wanted in gauges.items():
        value = _value(samples, name)
        assert value is not None and abs(value - wanted) < 1e-9, f"{name}: {value}, not {wanted}"
    # and the verdict is one-hot over the five verdicts
    flags = {
        each: _value(samples, "telescore_monitor_verdict", verdict=each) for each in WINDOW_VERDICTS
    }
    assert flags == {each: float(each == EXPECTED.verdict) for each in WINDOW_VERDICTS}, (
        f"verdict flags: {flags}"
    )
    # and the counters are the totals of the records
    counters = {
        "telescore_retrains_started_total": EXPECTED.retrains_started,
        "telescore_retrains_failed_total": EXPECTED.retrains_failed,
        "telescore_retrains_promoted_total": EXPECTED.retrains_promoted,
    }
    for name, wanted in counters.items():
        assert _value(samples, name) == wanted, f"{name}: {_value(samples, name)}"
    for action, wanted in EXPECTED.release_decisions:
        value = _value(samples, "telescore_release_decisions_total", action=action)
        assert value == wanted, f"release decisions {action}: {value}"
    # and the version MLServer serves as champion is there, the empty challenger slot is not
    served = _value(samples, "telescore_served_version", alias="champion")
    assert served == float(CHAMPION_VERSION), f"served champion: {served}"
    assert _value(samples, "telescore_served_version", alias="challenger") is None, (
        "no challenger is served: no series"
    )


def test_before_any_record_the_counters_start_at_zero_and_no_window_is_shown(
    fast_app: FastApp,
) -> None:
    # given an empty database
    # when Prometheus scrapes the app
    samples = _samples(fast_app)
    # then every counter is exported at 0, every release action included
    for name in ("started", "failed", "promoted"):
        value = _value(samples, f"telescore_retrains_{name}_total")
        assert value == 0.0, f"telescore_retrains_{name}_total: {value}"
    for action in RELEASE_ACTIONS:
        value = _value(samples, "telescore_release_decisions_total", action=action)
        assert value == 0.0, f"release decisions {action} from 0: {value}"
    # and nothing about a window or a run is made up
    names = {name for name, _ in samples}
    for absent in (
        "telescore_monitor_last_run_timestamp_seconds",
        "telescore_monitor_label_coverage",
        "telescore_monitor_verdict",
    ):
        assert absent not in names, f"{absent} exported before any monitor run"
    assert _value(samples, "telescore_outcomes_pending") == 0.0, "no pending outcome"


def test_while_mongodb_is_down_the_app_s_own_metrics_are_still_served(
    fast_app: FastApp,
) -> None:
    # given a loop reader on a MongoDB that does not answer
    down = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"
    with (
        MonitoringStore(down, "x", timeout_ms=300) as monitoring,
        ReleaseStore(down, "x", timeout_ms=300) as releases,
        OutcomeStore(down, "x", timeout_ms=300) as outcomes,
    ):
        reader = LoopStatusReader(monitoring, releases, outcomes)
        fast_app.client.app.dependency_overrides[deps.get_loop] = lambda: reader  # type: ignore[attr-defined]
        # when Prometheus scrapes the app
        samples = _samples(fast_app)
    # then the scrape succeeds with the app's metrics, and none of the loop's
    names = {name for name, _ in samples}
    assert "telescore_app_failed_logins_total" in names, "the app's own metrics are served"
    assert not any(
        name.startswith(("telescore_retrains", "telescore_monitor")) for name in names
    ), f"the loop's metrics while MongoDB is down: {sorted(names)}"


def _exported_names(fast_app: FastApp) -> dict[str, set[str]]:
    """Return every sample name the app (seeded) and MLServer's shipper export, with labels.

    A label is there by its name, and, as the app exports it, as `name="value"` too.
    """
    _seed(fast_app)
    answer = fast_app.client.get(
        "/metrics", headers={"Authorization": f"Bearer {_token(fast_app)}"}
    )
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(
                {*sample.labels, *(f'{key}="{value}"' for key, value in sample.labels.items())}
            )
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    for family in PredictionLogMetrics().collect():
        labels = (
            {"process", "model", "version"}
            if family.type != "histogram"
            else {
                "model",
                "version",
                "le",
            }
        )
        for suffix in suffixes[family.type]:
            exported.setdefault(family.name + suffix, set()).update(labels)
    return exported


def test_every_telescore_metric_the_alert_rules_read_is_exported(fast_app: FastApp) -> None:
    # given the metric names (and label matchers) the alert rules read
    rules = yaml.safe_load(RULES.read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    read = {
        (match.group(1), match.group(2) or "")
        for expression in expressions
        for match in re.finditer(r"\b(telescore_\w+)(\{[^}]*\})?", expression)
    }
    assert read, "the rules read telescore's metrics"
    # when the app (on the seeded loop) and MLServer's shipper are scraped
    exported = _exported_names(fast_app)
    # then each name is exported, with the labels the rules match on
    for name, matchers in sorted(read):
        assert name in exported, f"the rules read {name}, which nothing exports"
        for label, value in re.findall(r'(\w+)\s*=\s*"([^"]*)"', matchers):
            assert label in exported[name], f"{name} has no label {label} (rules: {matchers})"
            if name.startswith(("telescore_monitor", "telescore_release", "telescore_retrains")):
                assert f'{label}="{value}"' in exported[name], f"{name} has no {label}={value}"


def test_a_record_the_reader_cannot_read_leaves_the_loop_out_not_the_scrape(
    fast_app: FastApp,
) -> None:
    # given a routing revision no routing validates (written by hand, say)
    fast_app.services.loop.releases.set_routing({"mode": "no such mode"})
    # when Prometheus scrapes the app
    samples = _samples(fast_app)
    # then the scrape succeeds (no AppDown for an app that serves), without the loop's metrics
    names = {name for name, _ in samples}
    assert "telescore_app_failed_logins_total" in names, "the app's own metrics are served"
    assert "telescore_retrains_started_total" not in names, "the loop's metrics were read"
