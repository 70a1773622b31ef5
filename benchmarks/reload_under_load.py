"""Move `champion` to another version under steady load: how soon is it served, does anything fail?

    .venv/bin/python -m benchmarks.reload_under_load [--seconds 15] [--concurrency 8]
                                                     [--swaps 1] [--saturate N] [--no-log]

It registers two versions fitted on all 41,188 rows (C=1.0 and C=0.01, so their scores
differ), serves `champion` (v1) with telescore's MLServer, prediction log on (nx-27017) unless
--no-log, with its reconciler (`telescore serve reconcile`, as `telescore serve start` runs it),
and drives it with `--concurrency` closed-loop httpx clients for `--seconds`, recording every
answer (status, model_version, prediction ids). At evenly spaced moments it moves `champion`
to the other version in the registry, which is all a promotion does, and times until MLServer
serves it: the reconciler's poll (`TELESCORE_SERVING_RECONCILE_INTERVAL`, 2 s) plus the load.
`--saturate N` adds N wrk connections of unrecorded load, so that the swap happens on a server
with no CPU to spare.

It prints failures, when the last old-version and first new-version answers came, latency and
cores before, during and after each swap, answers per 0.5 s around it, and whether every
answered prediction is in MongoDB with the version that answered it. Writes
benchmarks/results/reload_under_load.json; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Report

BUCKET = 0.5
Reading = tuple[float, dict[str, float]]


@dataclass
class Swap:
    """One alias move and reload, with CPU meter readings when it started and returned."""

    old: str
    new: str
    started: Reading = (0.0, {})
    returned: Reading = (0.0, {})
    outcome: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def read_answer(response: Any) -> str:
    """Return "<model_version> <prediction ids as JSON>" from a V2 response."""
    body = response.json()
    return f"{body['model_version']} {body['parameters']['prediction_ids']}"


def version_of(sample: harness.Sample) -> str:
    return sample.detail.split(" ", 1)[0]


def make_reload(tracking: str, server: stack.Server, meter: harness.CpuMeter) -> Any:
    """Return the operation under test: move `champion`, wait until MLServer serves it."""
    from mlflow import MlflowClient

    from telescore.io.serving_client import ServingClient
    from telescore.services.processes import wait_until

    def reload(swap: Swap) -> None:
        client = MlflowClient(tracking)
        swap.started = meter.read()
        client.set_registered_model_alias(stack.MODEL, "champion", swap.new)
        try:
            with ServingClient(server.url, timeout=10.0) as serving:
                wait_until(
                    lambda: serving.served_version(stack.MODEL) == swap.new,
                    120.0,
                    what=f"v{swap.new} served",
                    interval=0.05,
                )
            swap.outcome = f"v{swap.new} served by the reconciler"
        except Exception as error:  # the finding is the error itself: report it, do not crash
            swap.outcome = f"release FAILED: {type(error).__name__}: {error}"
        swap.returned = meter.read()

    return reload


def start_reconciler(services: stack.Stack, server: stack.Server, tracking: str) -> None:
    """Start the server's reconciler, as `telescore serve start` does; it stops on exit."""
    from telescore.services.mlserver import reconciler_process

    home = server.repository.parent
    env = {"TELESCORE_MLFLOW_TRACKING_URI": tracking, "TELESCORE_ENV_FILE": str(home / "no.env")}
    process = reconciler_process(
        home, server.repository, server.url, home / "reconciler.json", env=env
    )
    services.callback(process.stop)
    process.start()


async def load_with_swaps(
    target: harness.Target, args: Any, swaps: list[Swap], reload: Callable[[Swap], None]
) -> dict[str, Any]:
    """Drive steady load for `args.seconds`, swapping at evenly spaced times."""
    meter = harness.CpuMeter(target.parties)
    async with harness.sender(target, args.concurrency, read_answer) as send:
        warm, _ = await harness.drive(send, args.concurrency, 1.0)  # not timed, but logged
        with tempfile.TemporaryDirectory() as folder:
            wrk = None
            if args.saturate:
                script, seconds = Path(folder) / "post.lua", args.seconds + 1
                command = harness.wrk_command(
                    target.address, target.payload, args.saturate, seconds, script
                )
                wrk = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
                await asyncio.sleep(0.5)  # its connections open before the recorded load starts
            first = meter.read()

            async def swapper() -> None:
                for number, swap in enumerate(swaps, start=1):
                    at = first[0] + args.seconds * number / (len(swaps) + 1)
                    await asyncio.sleep(max(0.0, at - time.perf_counter()))
                    await asyncio.to_thread(reload, swap)  # MLflow and the reload block

            load = harness.drive(send, args.concurrency, args.seconds)
            (samples, _), _ = await asyncio.gather(load, swapper())
            last = meter.read()
            output = (await wrk.communicate())[0].decode() if wrk else ""
    background = harness.parse_wrk(output, args.saturate) if wrk else None
    return {"warm": warm, "samples": samples, "first": first, "last": last, "wrk": background}


def analyse(swaps: list[Swap], run: dict[str, Any], concurrency: int) -> list[list[Any]]:
    """Fill each swap's figures; return the rows of the phase table."""
    samples, rows = run["samples"], []
    for number, swap in enumerate(swaps):
        low = swaps[number - 1].returned if number else run["first"]
        high = swaps[number + 1].started if number + 1 < len(swaps) else run["last"]
        began = swap.started[0]
        window = [s for s in samples if s.ok and low[0] <= s.end <= high[0]]
        old = [s.end - began for s in window if version_of(s) == swap.old]
        new = [s.end - began for s in window if version_of(s) == swap.new]
        buckets = Counter(int((s.end - began) // BUCKET) for s in window)
        swap.figures = {
            "reload_s": swap.returned[0] - began,
            "last_old_s": max(old, default=None),
            "first_new_s": min(new, default=None),
            "old_after_first_new": sum(end > min(new) for end in old) if new else 0,
            "answers_per_bucket": dict(sorted(buckets.items())),
        }
        phases = {"before": (low, swap.started), "during": (swap.started, swap.returned)}
        for phase, (start, end) in (phases | {"after": (swap.returned, high)}).items():
            sent = [s for s in samples if start[0] <= s.start < end[0]]
            figures = harness.summarise("httpx", concurrency, sent, end[0] - start[0])
            cores = harness.usage_between(start, end).cores()
            swap.figures[phase] = {"figures": figures, "cores": cores}
            latency = [figures.p50_ms, figures.p99_ms, figures.max_ms]
            parties = [cores.get(p, 0.0) for p in ("server", "shipper", "db", "client", "other")]
            name = f"swap {number + 1} {phase}"
            rows.append(
                [name, figures.seconds, figures.requests, figures.errors, *latency, *parties]
            )
    return rows


def check_log(server: stack.Server, mongodb: stack.Server, samples: list[Any]) -> dict[str, int]:
    """Compare the documents in MongoDB with the answered predictions, id by id."""
    from telescore.io.prediction_store import PredictionStore

    answered = {}
    for sample in samples:
        if sample.ok:
            version, ids = sample.detail.split(" ", 1)
            answered |= dict.fromkeys(json.loads(ids), version)
    server.wait_drained()
    with PredictionStore(mongodb.url, "benchmark") as store:
        found = store.collection.find({}, {"model_version": 1})
        logged = {document["_id"]: document["model_version"] for document in found}
    return {
        "answered": len(answered),
        "documents": len(logged),
        "missing": sum(pid not in logged for pid in answered),
        "with another version": sum(logged.get(pid, v) != v for pid, v in answered.items()),
        # wrk's successes, plus requests in flight when a client stopped (answered, unseen).
        "not recorded": len(set(logged) - set(answered)),
    }


def report_run(report: Report, args: Any, swaps: list[Swap], run: dict[str, Any]) -> None:
    """Print what happened, swap by swap."""
    samples, wrk = run["samples"], run["wrk"]
    failures = Counter(s.detail for s in samples if not s.ok)
    versions = dict(sorted(Counter(version_of(s) for s in samples if s.ok).items()))
    report.line(
        f"\n{args.concurrency} clients for {args.seconds:.0f} s, prediction log "
        f"{'on' if args.log else 'off'}: {len(samples)} requests, "
        f"{sum(s.ok for s in samples) / args.seconds:.0f} req/s, failed "
        f"{sum(failures.values())}; answered by version {versions}"
    )
    for detail, count in failures.most_common(5):
        report.line(f"  {count} x {detail}")
    if wrk:
        report.line(
            f"plus wrk, {args.saturate} connections, unrecorded: {wrk.requests} requests, "
            f"{wrk.throughput:.0f} req/s, failed {wrk.errors}, p50 {wrk.p50_ms:.2f} ms"
        )
    rows = analyse(swaps, run, args.concurrency)
    for number, swap in enumerate(swaps, start=1):
        f = swap.figures
        at = {
            k: "never" if f[k] is None else f"{f[k]:+.3f} s" for k in ("last_old_s", "first_new_s")
        }
        report.line(
            f"swap {number}: champion v{swap.old} -> v{swap.new} in the registry; served after "
            f"{f['reload_s']:.2f} s ({swap.outcome}); last v{swap.old} answer "
            f"{at['last_old_s']}, first v{swap.new} answer {at['first_new_s']}; v{swap.old} "
            f"answers after the first v{swap.new}: {f['old_after_first_new']}"
        )
        buckets = f["answers_per_bucket"].items()
        shown = " ".join(f"[{b * BUCKET:+.1f}]{n}" for b, n in buckets if -8 <= b <= 12)
        report.line(f"  answers per {BUCKET} s from the alias move: {shown}")
    report.table(
        "Before, during and after each swap (requests by when they were sent)",
        ["phase", "s", "requests", "failed", "p50 ms", "p99 ms", "max ms", "cores: srv"]
        + ["shipper", "db", "client", "other"],
        rows,
        "'other' includes wrk" if wrk else "",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=1)
    parser.add_argument("--no-log", dest="log", action="store_false", help="prediction log off")
    parser.add_argument("--saturate", type=int, default=0, metavar="N", help="N wrk connections")
    args = parser.parse_args()
    report = Report("reload_under_load", {"settings": vars(args)})
    with stack.Stack("reload") as services:
        tracking = services.mlflow()
        features, labels = stack.load_dataset()
        versions = [stack.register(tracking, features, labels, C=c).version for c in (1.0, 0.01)]
        stack.set_champion(tracking, versions[0])
        mongodb = services.mongodb()
        server = services.mlserver("mlserver", tracking, mongodb if args.log else None)
        services.start(server)
        start_reconciler(services, server, tracking)
        report.log(f"MLServer serves champion v{versions[0]}; v{versions[1]} registered")
        log_path = server.process.log_path
        log_lines = len(log_path.read_text(errors="replace").splitlines())
        body = stack.v2_body([stack.prospect(features)])
        target = server.target("http", body, mongodb)
        swaps = [Swap(versions[n % 2], versions[(n + 1) % 2]) for n in range(args.swaps)]
        reload = make_reload(tracking, server, harness.CpuMeter(target.parties))
        run = asyncio.run(load_with_swaps(target, args, swaps, reload))
        report.log("load finished")
        check = check_log(server, mongodb, run["warm"] + run["samples"]) if args.log else None
        lines = log_path.read_text(errors="replace").splitlines()[log_lines:]
        problems = [line for line in lines if "ERROR" in line or "Traceback" in line]

    report_run(report, args, swaps, run)
    if check:
        report.line("\nprediction log: " + ", ".join(f"{k} {v}" for k, v in check.items()))
    report.line(f"MLServer log lines with ERROR/Traceback during the run: {len(problems)}")
    for line in problems[:10]:
        report.line(f"  {line[:200]}")
    swap_figures = [{"old": s.old, "new": s.new, "outcome": s.outcome} | s.figures for s in swaps]
    report.data |= {"swaps": swap_figures, "check": check, "wrk": run["wrk"]}
    report.save()


if __name__ == "__main__":
    main()
