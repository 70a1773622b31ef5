"""Time of the loop's metrics at one scrape, on stores with a long history (nx-27017).

    .venv/bin/python -m benchmarks.loop_status [--windows 10000] [--rounds 20]

Seeds `--windows` monitored windows, one retraining decision per window (one in 20 a retrain,
its run ended), one release decision per window (mostly `wait`) and 1,000 pending outcomes,
then times `jobs.loop_status.read_loop_status` and the app's collector rendering it, as a
scrape of `/metrics` runs them. Prints the median and the slowest round; asserts nothing
(docs/metrics.md quotes it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from telescore.app.loop_metrics import LoopCollector
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.loop_status import LoopStatusReader
from telescore.services.embedded import mongodb_server
from telescore.services.processes import free_port

START = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)
VERDICTS = ("healthy", "awaiting labels", "degraded", "insufficient data")


def seed(monitoring: MonitoringStore, releases: ReleaseStore, windows: int) -> None:
    """Store `windows` windows, a decision each, and a release decision each (in batches)."""
    monitoring.ensure_indexes()
    releases.ensure_indexes()
    runs, decisions, release_decisions = [], [], []
    for index in range(windows):
        start = START + WINDOW * index
        runs.append(
            {
                "_id": start.isoformat(),
                "window_start": start,
                "window_end": start + WINDOW,
                "rows": 1000,
                "labelled_rows": 400,
                "predictions": 1000,
                "model_version": str(1 + index // 500),
                "verdict": VERDICTS[index % len(VERDICTS)],
                "verdict_reason": "seeded",
                "share_drifted_features": 0.2,
                "roc_auc": 0.7,
                "mean_score": 0.1,
                "positive_rate": 0.12,
                "read_at": start + WINDOW,
            }
        )
        retrain = index % 20 == 0
        decision = {
            "_id": str(uuid.uuid4()),
            "decided_at": start + WINDOW + timedelta(minutes=2),
            "window_start": start,
            "retrain": retrain,
            "reason": "seeded",
        }
        if retrain:
            decision["training"] = {
                "final": True,
                "state": "Failed" if index % 60 == 0 else "Completed",
                "version": str(1 + index // 500),
                "promoted": index % 40 == 0,
                "released": index % 40 == 20,
            }
        decisions.append(decision)
        release_decisions.append(
            {
                "_id": str(uuid.uuid4()),
                "decided_at": start + WINDOW,
                "action": "promote" if index % 100 == 0 else "wait",
                "reason": "seeded",
                "champion_version": "1",
                "challenger_version": str(1 + index // 500),
            }
        )
    for collection, documents in (
        (monitoring.runs, runs),
        (monitoring.decisions, decisions),
        (releases.decisions, release_decisions),
    ):
        for first in range(0, len(documents), 1000):
            collection.insert_many(documents[first : first + 1000])
    releases.set_routing({"mode": "champion", "canary_weight": 0.0})


def main() -> None:
    """Seed the stores on a fresh nx-27017, then time the reads of a scrape."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        port = free_port()
        with mongodb_server(Path(state), port).running():
            uri, database = f"mongodb://127.0.0.1:{port}", "bench"
            with (
                MonitoringStore(uri, database) as monitoring,
                ReleaseStore(uri, database) as releases,
                OutcomeStore(uri, database) as outcomes,
            ):
                began = time.perf_counter()
                seed(monitoring, releases, options.windows)
                outcomes.ensure_indexes()
                print(f"seeded {options.windows} windows in {time.perf_counter() - began:.1f} s")
                collector = LoopCollector()
                collector.read = LoopStatusReader(monitoring, releases, outcomes).read
                registry = CollectorRegistry()
                registry.register(collector)
                seconds = []
                for _ in range(options.rounds):
                    began = time.perf_counter()
                    text = generate_latest(registry)
                    seconds.append(time.perf_counter() - began)
                print(
                    f"scrape of the loop's metrics ({len(text)} bytes), {options.rounds} rounds: "
                    f"median {statistics.median(seconds) * 1000:.1f} ms, "
                    f"slowest {max(seconds) * 1000:.1f} ms"
                )


if __name__ == "__main__":
    main()
