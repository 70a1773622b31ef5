"""The loop's figures as Prometheus metrics, read from MongoDB each time `/metrics` is scraped.

Every app replica reads the same records and exports the same values (the alert rules take
`max` over the replicas). Counters are totals of stored records, exported from 0 before the
first one. Labels are bounded: the five window verdicts, the release actions, two aliases.
While MongoDB does not answer (or a record cannot be read), none of these is exported, and the
app's own metrics still are: Prometheus sees them absent rather than stale. Names and meaning:
docs/metrics.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pymongo.errors import PyMongoError

from telescore.core.loop_status import LoopStatus, verdict_flags

logger = logging.getLogger(__name__)

SERVED_ALIASES: Final = ("champion", "challenger")


def loop_metrics(status: LoopStatus) -> list[Metric]:
    """Return the loop's metric families for `status` (figures without a value are left out)."""
    families: list[Metric] = []

    def gauge(name: str, documentation: str, value: float | None) -> None:
        if value is not None:
            families.append(GaugeMetricFamily(name, documentation, value=value))

    def counter(name: str, documentation: str, value: float) -> None:
        families.append(CounterMetricFamily(name, documentation, value=value))

    window = status.last_window
    gauge(
        "telescore_monitor_last_run_timestamp_seconds",
        "When the last monitor run finished (Unix time).",
        status.last_run_at.timestamp() if status.last_run_at else None,
    )
    gauge(
        "telescore_monitor_window_seconds",
        "A monitoring window's length.",
        status.window_seconds,
    )
    if window is not None:
        gauge(
            "telescore_monitor_window_predictions",
            "Predictions logged in the last judged window.",
            window.predictions,
        )
        gauge(
            "telescore_monitor_label_coverage",
            "Share (0-1) of the last judged window's predictions with an outcome.",
            window.label_coverage,
        )
        gauge(
            "telescore_monitor_drift_share",
            "Share of the features found drifted in the last judged window.",
            window.drift_share,
        )
        gauge(
            "telescore_monitor_roc_auc",
            "ROC AUC on the last judged window's labelled predictions.",
            window.roc_auc,
        )
        gauge(
            "telescore_monitor_calibration_gap",
            "|mean score - positive rate| on the last judged window's labelled predictions.",
            window.calibration_gap,
        )
        verdicts = GaugeMetricFamily(
            "telescore_monitor_verdict",
            "1 for the last judged window's verdict, 0 for the others.",
            labels=["verdict"],
        )
        for verdict, flag in verdict_flags(window.verdict).items():
            verdicts.add_metric([verdict], flag)
        families.append(verdicts)
    gauge(
        "telescore_monitor_degraded_windows_since_retrain",
        "Degraded windows in a row, the latest judged included, of a retrained champion.",
        status.degraded_windows_since_retrain,
    )
    counter(
        "telescore_retrains_started",
        "Training runs the retraining policy triggered.",
        status.retrains_started,
    )
    counter(
        "telescore_retrains_failed",
        "Triggered training runs that ended failed or crashed.",
        status.retrains_failed,
    )
    counter(
        "telescore_retrains_promoted",
        "Retrained models that became champion.",
        status.retrains_promoted,
    )
    decisions = CounterMetricFamily(
        "telescore_release_decisions",
        "Release decisions recorded, by action.",
        labels=["action"],
    )
    for action, count in status.release_decisions.items():
        decisions.add_metric([action], count)
    families.append(decisions)
    if status.served is not None:
        served = GaugeMetricFamily(
            "telescore_served_version",
            "The registry version MLServer serves as each alias.",
            labels=["alias"],
        )
        for alias in SERVED_ALIASES:
            version = status.served.get(alias)
            if version is not None and version.isdigit():
                served.add_metric([alias], float(version))
        families.append(served)
    gauge(
        "telescore_outcomes_pending",
        "Outcomes waiting for their prediction to be logged.",
        status.pending_outcomes,
    )
    return families


class LoopCollector(Collector):
    """Collects the loop's metrics from a reader of `LoopStatus`, at each scrape."""

    def __init__(self) -> None:
        self.read: Callable[[], LoopStatus] | None = None
        """Set by the `/metrics` route to the lifespan's reader; None: nothing to export."""

    def collect(self) -> Iterator[Metric]:
        """Read the loop's state now and yield its metrics (none while MongoDB is down)."""
        if self.read is None:
            return
        try:
            status = self.read()
        except PyMongoError as error:
            logger.warning("the loop's metrics are not exported: MongoDB: %s", error)
            return
        except Exception:  # noqa: BLE001 - a failing scrape would read as the app being down
            # A record the reader cannot make sense of must not fail the whole scrape: that
            # is `up == 0`, AppDown, for an app that serves. Logged, and these left out.
            logger.exception("the loop's metrics are not exported: its records could not be read")
            return
        yield from loop_metrics(status)
