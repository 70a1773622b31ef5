"""Move `champion` to another version under steady load: how soon is it served, does anything fail?

    .venv/bin/python -m benchmarks.reload_under_load [--seconds 15] [--concurrency 8] [--swaps 1]

MLServer with its reconciler, under closed-loop httpx clients recording every answer; the
alias moves at evenly spaced moments, as a promotion moves it. For a server with no CPU to
spare, load both cores meanwhile (`stress-ng --cpu 2`). How: docs/benchmarks/serving.md.
Writes benchmarks/results/reload_under_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks import harness, stack
from benchmarks.report import Report

if TYPE_CHECKING:
    from telescore.io.registry import Registry


@dataclass
class Swap:
    """One alias move and reload: when it started and when the new version was served."""

    old: str
    new: str
    started: float = 0.0
    returned: float = 0.0
    outcome: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def read_answer(response: Any) -> str:
    """Return "<model_version> <prediction ids as JSON>" from a V2 response."""
    body = response.json()
    return f"{body['model_version']} {body['parameters']['prediction_ids']}"


def version_of(sample: harness.Sample) -> str:
    return sample.detail.split(" ", 1)[0]


def make_reload(registry: Registry, server: stack.Server) -> Callable[[Swap], None]:
    """Return the operation under test: move `champion`, wait until MLServer serves it."""
    from telescore.io.serving_client import ServingClient
    from telescore.services.processes import wait_until

    def reload(swap: Swap) -> None:
        swap.started = time.perf_counter()
        registry.set_alias("champion", swap.new)  # all a promotion does to serving
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
        swap.returned = time.perf_counter()

    return reload


def start_reconciler(services: stack.Stack, server: stack.Server) -> None:
    """Start the server's reconciler, as `telescore serve start` does; it stops on exit."""
    from telescore.services.mlserver import reconciler_process

    home, tracking = server.repository.parent, services.context.tracking_uri
    env = {"TELESCORE_MLFLOW_TRACKING_URI": tracking, "TELESCORE_ENV_FILE": str(home / "no.env")}
    state = home / "reconciler.json"
    token = services.context.serving_control_token  # the one its MLServer was given
    process = reconciler_process(
        home, server.repository, server.url, state, control_token=token, env=env
    )
    services.callback(process.stop)
    process.start()


async def load_with_swaps(
    target: harness.Target, args: Any, swaps: list[Swap], reload: Callable[[Swap], None]
) -> dict[str, Any]:
    """Drive steady load for `args.seconds`, swapping at evenly spaced times."""
    async with harness.sender(target, args.concurrency, read_answer) as send:
        warm, _ = await harness.drive(send, args.concurrency, 1.0)  # not timed, but logged
        first = time.perf_counter()

        async def swapper() -> None:
            for number, swap in enumerate(swaps, start=1):
                at = first + args.seconds * number / (len(swaps) + 1)
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                await asyncio.to_thread(reload, swap)  # MLflow and the reload block

        load = harness.drive(send, args.concurrency, args.seconds)
        (samples, _), _ = await asyncio.gather(load, swapper())
    return {"warm": warm, "samples": samples, "first": first, "last": time.perf_counter()}


def analyse(swaps: list[Swap], run: dict[str, Any]) -> None:
    """Fill each swap's figures: how long until served, the last old and first new answers."""
    samples = run["samples"]
    for number, swap in enumerate(swaps):
        low = swaps[number - 1].returned if number else run["first"]
        high = swaps[number + 1].started if number + 1 < len(swaps) else run["last"]
        window = [s for s in samples if s.ok and low <= s.end <= high]
        old = [s.end - swap.started for s in window if version_of(s) == swap.old]
        new = [s.end - swap.started for s in window if version_of(s) == swap.new]
        swap.figures = {
            "reload_s": swap.returned - swap.started,
            "last_old_s": max(old, default=None),
            "first_new_s": min(new, default=None),
            "old_after_first_new": sum(end > min(new) for end in old) if new else 0,
        }


def check_log(services: stack.Stack, server: stack.Server, samples: list[Any]) -> dict[str, int]:
    """Compare the documents in MongoDB with the answered predictions, id by id."""
    from telescore.io.prediction_store import PredictionStore

    answered = {}
    for sample in samples:
        if sample.ok:
            version, ids = sample.detail.split(" ", 1)
            answered |= dict.fromkeys(json.loads(ids), version)
    server.wait_drained()
    found = services.context.store(PredictionStore).collection.find({}, {"model_version": 1})
    logged = {document["_id"]: document["model_version"] for document in found}
    return {
        "answered": len(answered),
        "documents": len(logged),
        "missing": sum(pid not in logged for pid in answered),
        "with another version": sum(logged.get(pid, v) != v for pid, v in answered.items()),
        # Requests in flight when a client stopped (answered, unseen).
        "not recorded": len(set(logged) - set(answered)),
    }


def report_run(report: Report, args: Any, swaps: list[Swap], run: dict[str, Any]) -> None:
    """Print what happened, swap by swap."""
    samples = run["samples"]
    failures = Counter(s.detail for s in samples if not s.ok)
    versions = dict(sorted(Counter(version_of(s) for s in samples if s.ok).items()))
    report.line(
        f"\n{args.concurrency} clients for {args.seconds:.0f} s, prediction log on: "
        f"{len(samples)} requests, {sum(s.ok for s in samples) / args.seconds:.0f} req/s, "
        f"failed {sum(failures.values())}; answered by version {versions}"
    )
    for detail, count in failures.most_common(5):
        report.line(f"  {count} x {detail}")
    analyse(swaps, run)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=1)
    args = parser.parse_args()
    report = Report("reload_under_load", {"settings": vars(args)})
    with stack.Stack("reload") as services:
        registry, mongodb = services.context.registry, services.mongodb()
        features, labels = stack.load_dataset()
        registered = [stack.register(services.context, features, labels, C=c) for c in (1.0, 0.01)]
        versions = [each.version for each in registered]
        registry.set_alias("champion", versions[0])
        server = services.mlserver("mlserver", mongodb)
        services.start(server)
        start_reconciler(services, server)
        report.log(f"MLServer serves champion v{versions[0]}; v{versions[1]} registered")
        log_path = server.process.log_path
        log_lines = len(log_path.read_text(errors="replace").splitlines())
        target = server.target("http", stack.v2_body([stack.prospect(features)]), mongodb)
        swaps = [Swap(versions[n % 2], versions[(n + 1) % 2]) for n in range(args.swaps)]
        reload = make_reload(registry, server)
        run = asyncio.run(load_with_swaps(target, args, swaps, reload))
        report.log("load finished")
        check = check_log(services, server, run["warm"] + run["samples"])
        lines = log_path.read_text(errors="replace").splitlines()[log_lines:]
        problems = [line for line in lines if "ERROR" in line or "Traceback" in line]

    report_run(report, args, swaps, run)
    report.line("\nprediction log: " + ", ".join(f"{k} {v}" for k, v in check.items()))
    report.line(f"MLServer log lines with ERROR/Traceback during the run: {len(problems)}")
    for line in problems[:10]:
        report.line(f"  {line[:200]}")
    swap_figures = [{"old": s.old, "new": s.new, "outcome": s.outcome} | s.figures for s in swaps]
    report.data |= {"swaps": swap_figures, "check": check}
    report.save()


if __name__ == "__main__":
    main()
