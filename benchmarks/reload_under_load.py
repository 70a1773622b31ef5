"""Move `champion` to a new version and reload MLServer under steady load: does anything fail?

Run from the project root (`-m`: Deepchecks installs a `benchmarks` package of its own):

    .venv/bin/python -m benchmarks.reload_under_load [--seconds 15] [--concurrency 8] [--swaps 1]

It starts an MLflow server, registers two versions of build_pipeline(ModelParams()) fitted on
all 41,188 rows (C=1.0 and C=0.01, so their scores differ), points `champion` at v1 and serves
it with telescore's MLServer, prediction log on (nx-27017) unless --no-log. A closed loop of
`--concurrency` httpx clients then sends single-row V2 requests for `--seconds`; at evenly
spaced moments the `champion` alias is moved to the other version and
`telescore.serving.model_repository.sync_served_models` (the reload `telescore` runs after a
promotion) is called. Every response is recorded: status, served model_version, timing.

It prints the non-2xx count and what failed, when the last response from the old version and
the first from the new one arrived, latency before/during/after each swap, throughput per
second around it, and whether each answered request was logged with the version that answered.
The raw figures go to benchmarks/results/reload_under_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before NumPy loads: one BLAS/OpenMP thread, as in the server.
os.environ["OMP_NUM_THREADS"] = "1"
# Progress bars would interleave with the figures on every model download.
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

from benchmarks import load as load_tools  # noqa: E402 - after the thread setting
from benchmarks import serving_stack as stack  # noqa: E402

DATABASE = "reload_benchmark"
MODEL = "telemarketing"
BUCKET_SECONDS = 0.5


@dataclass
class Swap:
    """One alias move and reload, timed on the client's perf_counter clock."""

    from_version: str
    to_version: str
    alias_moved: float = 0.0
    reload_started: float = 0.0
    reload_returned: float = 0.0
    outcome: str = ""


class CpuSampler(threading.Thread):
    """Samples, every 0.25 s, the CPU seconds of the server, MongoDB, this client and all."""

    def __init__(self, server_pid: int, database_pid: int | None) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self.pids = [server_pid] + ([database_pid] if database_pid else [])
        self.samples: list[tuple[float, ...]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            groups = [stack.process_group_cpu_seconds(pid) for pid in self.pids]
            if len(groups) == 1:
                groups.append(0.0)
            busy = stack.machine_busy_seconds()
            self.samples.append((time.perf_counter(), *groups, time.process_time(), busy))
            self.stopped.wait(0.25)

    def cores(self, low: float, high: float) -> dict[str, float]:
        """Return the cores used between two times (nearest samples outside them)."""
        times = [sample[0] for sample in self.samples]
        if len(times) < 2:
            return {}
        first = self.samples[max(0, bisect.bisect_right(times, low) - 1)]
        last = self.samples[min(len(times) - 1, bisect.bisect_left(times, high))]
        seconds = last[0] - first[0]
        if seconds <= 0:
            return {}
        server, database, client, busy = (b - a for a, b in zip(first[1:], last[1:], strict=True))
        return {
            "server": server / seconds,
            "database": database / seconds,
            "client": client / seconds,
            "other": max(0.0, busy - server - database - client) / seconds,
        }


def read_answer(response: Any) -> str:
    """Return "<model_version> <request id>" from a V2 response."""
    body = response.json()
    return f"{body['model_version']} {body['id']}"


async def load_with_swaps(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    swaps: list[Swap],
    reload: Callable[[Swap], str],
    saturate: int,
    work_dir: Path,
) -> tuple[list[load_tools.Sample], list[load_tools.Sample], float, float, dict[str, Any] | None]:
    """Drive steady load, swapping at evenly spaced times; return samples (warm-up apart).

    With `saturate` > 0, wrk adds that many connections of unrecorded load for the whole time,
    so the swap happens on a server with no CPU to spare (wrk still counts its failures).
    """
    async with load_tools.http_client(concurrency) as client:
        send = load_tools.http_sender(client, url, body, read_answer)
        # Warm-up, not recorded: connections open and the first requests' costs paid.
        warm_up, _ = await load_tools.drive(send, concurrency, 1.0)
        wrk = None
        if saturate:
            command = load_tools.wrk_command(url, body, saturate, math.ceil(seconds) + 1, work_dir)
            wrk = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            await asyncio.sleep(0.5)  # its connections open before the recorded load starts
        started = time.perf_counter()

        async def swapper() -> None:
            for number, swap in enumerate(swaps, start=1):
                at = started + seconds * number / (len(swaps) + 1)
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                # The reload is synchronous (MLflow and httpx clients): off the event loop.
                swap.outcome = await asyncio.to_thread(reload, swap)

        (samples, wall), _ = await asyncio.gather(
            load_tools.drive(send, concurrency, seconds), swapper()
        )
        background = None
        if wrk is not None:
            output, _ = await wrk.communicate()
            figures, raw = load_tools.parse_wrk(output.decode(), saturate)
            background = figures.as_dict() | {"raw": raw}
    return warm_up, samples, started, wall, background


def make_reload(tracking_uri: str, repository: Path, rest_url: str) -> Callable[[Swap], str]:
    """Return the operation under test: move `champion`, then reload what MLServer serves."""
    from mlflow import MlflowClient

    from telescore.io.serving_client import ServingClient
    from telescore.serving.model_repository import sync_served_models

    def reload(swap: Swap) -> str:
        client = MlflowClient(tracking_uri)
        swap.alias_moved = time.perf_counter()
        client.set_registered_model_alias(stack.REGISTERED_MODEL, "champion", swap.to_version)
        swap.reload_started = time.perf_counter()
        try:
            with ServingClient(rest_url, timeout=120.0) as serving:
                reloaded = sync_served_models(repository, serving, client=client)
        except Exception as error:  # the finding is the error itself: report it, do not crash
            swap.reload_returned = time.perf_counter()
            return f"reload FAILED: {type(error).__name__}: {error}"
        swap.reload_returned = time.perf_counter()
        return "; ".join(
            f"{each.model}: v{each.previous_version} -> v{each.version}" for each in reloaded
        )

    return reload


def latency_line(name: str, samples: list[load_tools.Sample], seconds: float) -> str:
    """Summarise one phase: requests, failures, p50/p99/max latency."""
    latencies = [sample.latency_ms for sample in samples]
    if not latencies:
        return f"    {name:8} no requests"
    return (
        f"    {name:7}{seconds:6.2f} s{len(samples):6d} requests "
        f"{sum(not s.ok for s in samples):3d} failed  "
        f"p50 {load_tools.percentile(latencies, 50):7.2f} ms  "
        f"p99 {load_tools.percentile(latencies, 99):7.2f} ms  max {max(latencies):8.2f} ms"
    )


def analyse(
    samples: list[load_tools.Sample],
    started: float,
    wall: float,
    swaps: list[Swap],
    sampler: CpuSampler,
) -> dict[str, Any]:
    """Count outcomes and versions, and slice latency and throughput around every swap."""
    statuses = Counter("2xx" if sample.ok else sample.detail.split(":", 1)[0] for sample in samples)
    failures = Counter(sample.detail for sample in samples if not sample.ok)
    versions = Counter(sample.detail.split(" ", 1)[0] for sample in samples if sample.ok)
    per_swap = []
    for number, swap in enumerate(swaps):
        window_start = swaps[number - 1].reload_returned if number else started
        window_end = swaps[number + 1].alias_moved if number + 1 < len(swaps) else started + wall
        old = [s for s in samples if s.ok and s.detail.split(" ", 1)[0] == swap.from_version]
        new = [s for s in samples if s.ok and s.detail.split(" ", 1)[0] == swap.to_version]
        old_in_window = [s for s in old if window_start <= s.end <= window_end]
        new_in_window = [s for s in new if window_start <= s.end <= window_end]
        last_old = max((s.end for s in old_in_window), default=None)
        first_new = min((s.end for s in new_in_window), default=None)
        spans = {
            "before": (window_start, swap.alias_moved),
            "during": (swap.alias_moved, swap.reload_returned),
            "after": (swap.reload_returned, window_end),
        }
        # A request belongs to the phase it was sent in.
        phases = {
            phase: [s for s in samples if low <= s.start < high]
            for phase, (low, high) in spans.items()
        }
        buckets = Counter(
            int((s.end - swap.reload_started) // BUCKET_SECONDS)
            for s in samples
            if window_start <= s.end <= window_end
        )
        per_swap.append(
            {
                "swap": swap,
                "last_old_after_reload_start_s": None
                if last_old is None
                else last_old - swap.reload_started,
                "first_new_after_reload_start_s": None
                if first_new is None
                else first_new - swap.reload_started,
                "old_after_first_new": sum(
                    first_new is not None and s.end > first_new for s in old_in_window
                ),
                "phases": phases,
                "spans": {phase: high - low for phase, (low, high) in spans.items()},
                "cores": {phase: sampler.cores(low, high) for phase, (low, high) in spans.items()},
                "buckets": dict(sorted(buckets.items())),
            }
        )
    return {
        "statuses": statuses,
        "failures": failures,
        "versions": versions,
        "per_swap": per_swap,
        "throughput": sum(s.ok for s in samples) / wall,
    }


def check_predictions(
    mongodb_uri: str, samples: list[load_tools.Sample], other_successes: int
) -> dict[str, Any]:
    """Compare the logged documents with the answered requests, id by id and version by id."""
    from telescore.io.prediction_store import PredictionStore

    answered = {}  # request id -> the version that answered it
    for sample in samples:
        if sample.ok:
            version, request_id = sample.detail.split(" ", 1)
            answered[request_id] = version
    deadline = time.monotonic() + 30.0
    with PredictionStore(mongodb_uri, DATABASE, timeout_ms=10_000) as store:
        # The log flushes every 0.5 s: wait until the count has not moved for 1.5 s.
        count, quiet_since = store.count(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.5:
            time.sleep(0.25)
            current = store.count()
            if current != count:
                count, quiet_since = current, time.monotonic()
        logged = {
            document["request_id"]: document["model_version"]
            for document in store.collection.find(
                {}, {"request_id": 1, "model_version": 1, "_id": 0}
            )
        }
    missing = [request_id for request_id in answered if request_id not in logged]
    wrong_version = [
        request_id
        for request_id, version in answered.items()
        if request_id in logged and logged[request_id] != version
    ]
    return {
        "answered": len(answered),
        "documents": len(logged),
        "missing": len(missing),
        "missing_examples": missing[:5],
        "logged_with_another_version": len(wrong_version),
        # Every recorded request was awaited, so these are wrk's: its successes, plus up to
        # its connection count in flight when it stopped (answered and logged, but unseen).
        "unanswered_documents": len(set(logged) - set(answered)),
        "other_successes": other_successes,
    }


def server_problems(log_path: Path, since_line: int) -> list[str]:
    """Return the MLServer log lines written during the run that mention errors."""
    lines = log_path.read_text(errors="replace").splitlines()[since_line:]
    return [line for line in lines if any(word in line for word in ("ERROR", "Traceback"))]


def print_report(
    analysis: dict[str, Any],
    predictions: dict[str, Any] | None,
    problems: list[str],
    settings: dict[str, Any],
    background: dict[str, Any] | None,
) -> None:
    """Print what happened around every swap."""
    total = sum(analysis["statuses"].values())
    non_2xx = total - analysis["statuses"].get("2xx", 0)
    print(
        f"\nReload under load: {settings['concurrency']} concurrent clients for "
        f"{settings['seconds']:.0f} s, prediction log {'on' if settings['log'] else 'off'}, "
        f"{os.cpu_count()} CPUs shared by client, server and other processes"
    )
    print(
        f"  {total} requests, {analysis['throughput']:.0f} req/s; "
        f"non-2xx or failed: {non_2xx}  {dict(analysis['statuses'])}"
    )
    for detail, count in analysis["failures"].most_common(5):
        print(f"    {count} x {detail}")
    print(f"  answered by version: {dict(sorted(analysis['versions'].items()))}")
    if background is not None:
        print(
            f"  plus wrk, {settings['saturate']} connections, unrecorded: "
            f"{background['requests']} requests, {background['throughput']:.0f} req/s, "
            f"failed {background['errors']} (non-2xx {background['raw']['non_2xx']}, socket "
            f"errors {background['errors'] - background['raw']['non_2xx']}), "
            f"p50 {background['p50_ms']:.2f} ms, p99 {background['p99_ms']:.2f} ms, "
            f"max {background['max_ms']:.2f} ms"
        )
    for number, swap_figures in enumerate(analysis["per_swap"], start=1):
        swap = swap_figures["swap"]
        took = swap.reload_returned - swap.reload_started
        print(
            f"\n  swap {number}: champion v{swap.from_version} -> v{swap.to_version}; "
            f"sync_served_models took {took:.2f} s ({swap.outcome})"
        )

        def show(seconds: float | None) -> str:
            return "never" if seconds is None else f"{seconds:+.3f} s"

        print(
            f"    last v{swap.from_version} answer "
            f"{show(swap_figures['last_old_after_reload_start_s'])}"
            f", first v{swap.to_version} answer "
            f"{show(swap_figures['first_new_after_reload_start_s'])} "
            f"(from the reload call; v{swap.from_version} answers after the first "
            f"v{swap.to_version}: {swap_figures['old_after_first_new']})"
        )
        for phase, phase_samples in swap_figures["phases"].items():
            cores = swap_figures["cores"][phase]
            print(
                latency_line(phase, phase_samples, swap_figures["spans"][phase])
                + (
                    f"  cores: server {cores['server']:.2f} db {cores['database']:.2f} "
                    f"client {cores['client']:.2f} other {cores['other']:.2f}"
                    if cores
                    else ""
                )
            )
        buckets = swap_figures["buckets"]
        print(
            f"    answers per {BUCKET_SECONDS} s from the reload call: "
            + " ".join(
                f"[{bucket * BUCKET_SECONDS:+.1f}]{count}"
                for bucket, count in buckets.items()
                if -4 <= bucket * BUCKET_SECONDS <= 6
            )
        )
    if predictions is not None:
        print(
            f"\n  prediction log: {predictions['answered']} answered requests, "
            f"{predictions['documents']} documents; missing {predictions['missing']}, "
            f"logged with another version {predictions['logged_with_another_version']}, "
            f"documents of requests not recorded {predictions['unanswered_documents']}"
            + (
                f" (wrk's: {predictions['other_successes']} successes, plus up to "
                f"{settings['saturate']} in flight when it stopped)"
                if settings["saturate"]
                else ""
            )
        )
    if settings["saturate"]:
        print("  (cores: 'other' includes wrk)")
    print(f"\n  MLServer log lines with ERROR/Traceback during the run: {len(problems)}")
    for line in problems[:10]:
        print(f"    {line[:200]}")


def main() -> None:
    """Register two versions, serve v1, swap under load, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of the load.")
    parser.add_argument("--concurrency", type=int, default=8, help="Concurrent clients.")
    parser.add_argument("--swaps", type=int, default=1, help="Alias moves, evenly spaced.")
    parser.add_argument("--no-log", dest="log", action="store_false", help="Prediction log off.")
    parser.add_argument(
        "--saturate",
        type=int,
        default=0,
        metavar="N",
        help="Add N wrk connections of unrecorded load, so the server has no CPU to spare.",
    )
    args = parser.parse_args()
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    from telescore.io.serving_client import inference_request

    with (
        stack.stop_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="telescore-reload-bench-") as temp,
    ):
        state_dir = Path(temp)
        mlflow_server, tracking_uri = stack.mlflow_service(state_dir)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        with mlflow_server.running():
            log(f"MLflow server up at {tracking_uri}")
            features, labels = stack.load_features()
            first = stack.register_version(tracking_uri, features, labels, C=1.0)
            second = stack.register_version(tracking_uri, features, labels, C=0.01)
            stack.set_champion(tracking_uri, first.version)
            log(f"registered v{first.version} (champion) and v{second.version}")
            mongodb, mongodb_uri = stack.mongodb_service(state_dir)
            runtime: dict[str, Any] = {"prediction_log": args.log}
            if args.log:
                runtime |= {"mongodb_uri": mongodb_uri, "mongodb_database": DATABASE}
            served = stack.mlserver_service(state_dir, "mlserver", tracking_uri, runtime)
            services = [mongodb, served.process] if args.log else [served.process]
            for service in services:
                service.launch()
            try:
                for service in services:
                    service.wait_healthy()
                log("MLServer serving champion")
                log_lines = len(served.process.log_path.read_text(errors="replace").splitlines())
                versions = [first.version, second.version]
                swaps = [
                    Swap(versions[number % 2], versions[(number + 1) % 2])
                    for number in range(args.swaps)
                ]
                body = json.dumps(inference_request([stack.prospect(features)])).encode()
                sampler = CpuSampler(
                    served.process.process.pid, mongodb.process.pid if args.log else None
                )
                sampler.start()
                warm_up, samples, load_started, wall, background = asyncio.run(
                    load_with_swaps(
                        f"{served.rest_url}/v2/models/{MODEL}/infer",
                        body,
                        args.concurrency,
                        args.seconds,
                        swaps,
                        make_reload(tracking_uri, served.repository, served.rest_url),
                        args.saturate,
                        state_dir,
                    )
                )
                sampler.stopped.set()
                sampler.join()
                log("load finished")
                wrk_successes = background["requests"] - background["errors"] if background else 0
                predictions = (
                    check_predictions(mongodb_uri, warm_up + samples, wrk_successes)
                    if args.log
                    else None
                )
                problems = server_problems(served.process.log_path, log_lines)
            finally:
                for service in reversed(services):
                    service.stop()

    analysis = analyse(samples, load_started, wall, swaps, sampler)
    settings = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "log": args.log,
        "saturate": args.saturate,
    }
    print_report(analysis, predictions, problems, settings, background)
    results = {
        "settings": settings | {"swaps": args.swaps},
        "statuses": analysis["statuses"],
        "failures": analysis["failures"],
        "versions": analysis["versions"],
        "throughput": analysis["throughput"],
        "swaps": [
            {
                "from_version": each["swap"].from_version,
                "to_version": each["swap"].to_version,
                "reload_seconds": each["swap"].reload_returned - each["swap"].reload_started,
                "outcome": each["swap"].outcome,
                "last_old_after_reload_start_s": each["last_old_after_reload_start_s"],
                "first_new_after_reload_start_s": each["first_new_after_reload_start_s"],
                "old_after_first_new": each["old_after_first_new"],
                "phases": {
                    phase: load_tools.summarise(
                        "httpx", args.concurrency, phase_samples, each["spans"][phase]
                    ).as_dict()
                    for phase, phase_samples in each["phases"].items()
                },
                "answers_per_bucket": each["buckets"],
                "cores": each["cores"],
            }
            for each in analysis["per_swap"]
        ],
        "predictions": predictions,
        "wrk_background": background,
        "server_problems": problems,
        "total_seconds": time.perf_counter() - started,
    }
    stack.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = stack.RESULTS_DIR / "reload_under_load.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
