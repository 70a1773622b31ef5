"""Time and peak memory of one monitor run on windows of 10k, 100k and 1M logged predictions.

    .venv/bin/python -m benchmarks.monitoring [--sizes 10000,100000,1000000] [--profile]

It starts MLflow and nx-27017 of its own on free ports (`benchmarks.stack`), trains a champion
with the `telescore.jobs.training` functions on all 41,188 rows (the version's lineage names
the data snapshot the monitor compares against), then, per size, logs that many predictions
into one 60-minute window of a database of their own: rows drawn with replacement from
data/bank-additional-full.csv.gz (without `duration`), scored by the champion, in requests of
1,000 rows, with the outcomes of a share of them (30%) recorded through `OutcomeStore.record`.

Each size then gets ONE run of `telescore.jobs.monitoring.monitor_window`, dry
(`prefect_api_url=None`), in a fresh spawned process, so that neither the insertion nor this
process counts in its peak RSS (`ru_maxrss` of that process). Its wall time is split into the
read of the window from nx-27017 (once, with no count first), the join of the outcomes,
building the frame, the champion's reference rows, Evidently, and the rest; nx-27017's own
peak RSS during the run is read beside it (/proc VmHWM, reset before the run).

Last, the detection power of the sampling above `monitoring.max_rows`: the same drawn rows with
euribor3m shifted by a few amounts, evaluated by `telescore.validation.evidently.evaluate_window`
on the whole window and on the every-k-th sample `read_window` would keep, side by side.

Prints, writes benchmarks/results/monitoring.{json,png}, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import math
import multiprocessing
import pstats
import resource
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

SIZES = (10_000, 100_000, 1_000_000)
SHIFTS = (0.0, 0.05, 0.1, 0.2, 0.5)
LABELLED_SHARE = 0.3
REQUEST_ROWS = 1_000
"""Rows per logged request (one timestamp, one insert_many)."""
OUTCOME_BATCH = 5_000
EXPERIMENT = "benchmark-monitoring"
WINDOW_START = datetime(2026, 3, 2, 10, tzinfo=UTC)
READ_TIMEOUT_MS = 900_000
"""OutcomeStore timeout: nx-27017 answers a count over 1M rows after about a minute."""
TARGET_SECONDS, TARGET_MIB, TARGET_ROWS = 120.0, 2048.0, 1_000_000
SEED = 20261123
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """What the process running one monitor needs to find everything."""

    size: int
    mongodb_uri: str
    database: str
    tracking_uri: str
    model_name: str
    experiment: str
    window_start: datetime
    window_end: datetime
    state_dir: str
    cache_dir: str
    profile_path: str = ""


# -- in the monitor's own process -----------------------------------------------------------------


def rss_mib() -> float:
    """Return this process's resident memory now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_monitor(job: Job, sender: Connection) -> None:
    """Entry point of the spawned process: run the monitor once, send back its figures."""
    try:
        sender.send(monitor_once(job))
    except BaseException:  # anything, so that the parent reads why instead of waiting
        sender.send({"error": traceback.format_exc()})
    finally:
        sender.close()


def monitor_once(job: Job) -> dict[str, Any]:
    """Import, build the Monitor as pipelines/monitoring.py does, run it once, time its parts."""
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    # Evidently is imported inside the adapter's functions: import it here, so that the run's
    # time is the work on the window and the imports (once per process) are told apart.
    import evidently.metrics
    import evidently.presets  # noqa: F401

    from telescore.core.monitoring import Window, load_monitoring_params
    from telescore.io.monitoring_store import MonitoringStore
    from telescore.io.outcome_store import OutcomeStore
    from telescore.io.registry import Registry
    from telescore.jobs import monitoring
    from telescore.validation.evidently_dashboards import MonitoringWorkspace

    imports = time.perf_counter() - started
    params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
    window = Window(job.window_start, job.window_end)
    state = Path(job.state_dir)
    with (
        OutcomeStore(job.mongodb_uri, job.database, timeout_ms=READ_TIMEOUT_MS) as outcomes,
        MonitoringStore(job.mongodb_uri, job.database) as records,
        tempfile.TemporaryDirectory(prefix="telescore-monitor-") as work,
    ):
        records.ensure_indexes()
        monitor = monitoring.Monitor(
            params=params,
            registry=Registry(job.tracking_uri, job.model_name, job.experiment),
            outcomes=outcomes,
            records=records,
            workspace=MonitoringWorkspace(state / "evidently"),
            cache_dir=Path(job.cache_dir),
            prefect_api_url=None,
        )
        parts = instrument(monitoring, monitor)
        rss_before = rss_mib()
        profile = cProfile.Profile() if job.profile_path else None
        began = time.perf_counter()
        if profile:
            profile.enable()
        result = monitoring.monitor_window(monitor, window, Path(work))
        if profile:
            profile.disable()
            profile.dump_stats(job.profile_path)
        wall = time.perf_counter() - began
        figures = records.run(window.key) or {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "imports": imports,
        "wall": wall,
        "parts": parts,
        "rss_before": rss_before,
        "peak_rss": peak,
        "predictions": figures.get("predictions"),
        "rows": figures.get("rows"),
        "labelled_rows": figures.get("labelled_rows"),
        "sampled_every": figures.get("sampled_every"),
        "verdict": figures.get("verdict"),
        "share_drifted_features": figures.get("share_drifted_features"),
        "drift_euribor3m": figures.get("drift_euribor3m"),
        "retrain": result.decision.get("retrain"),
    }


def instrument(monitoring: Any, monitor: Any) -> dict[str, float]:
    """Time the monitor's parts in place; return the dict the seconds accumulate in."""
    seconds: dict[str, float] = {}

    def timed(name: str, function: Callable[..., T]) -> Callable[..., T]:
        seconds[name] = 0.0

        def call(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - started

        return call

    def timed_chunks(name: str, function: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
        """Time a generator's own work (inside each `next`), not its caller's."""
        seconds[name] = 0.0

        def call(*args: Any, **kwargs: Any) -> Iterator[T]:
            chunks = function(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                finally:
                    seconds[name] += time.perf_counter() - started
                yield chunk

        return call

    outcomes = monitor.outcomes
    # Instance attributes: the store's own calls (labelled_predictions -> get_many) see them.
    outcomes.get_many = timed("join", outcomes.get_many)
    outcomes.labelled_predictions = timed_chunks("read", outcomes.labelled_predictions)
    monitoring.read_window = timed("read_window", monitoring.read_window)
    monitoring.champion_reference = timed("reference", monitoring.champion_reference)
    monitoring.evaluate_window = timed("evidently", monitoring.evaluate_window)
    workspace = monitor.workspace
    workspace.save_window = timed("snapshot", workspace.save_window)
    workspace.write_dashboard = timed("dashboard", workspace.write_dashboard)
    return seconds


# -- set-up: the champion and the logged windows --------------------------------------------------


def train_champion(tracking_uri: str, work: Path) -> dict[str, Any]:
    """Train on all rows with the jobs the training flow runs; it becomes champion."""
    from telescore.core.params import load_params
    from telescore.io.registry import Registry
    from telescore.jobs import training

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    started = time.perf_counter()
    params = load_params(stack.PROJECT_ROOT / "params.yaml")
    registry = Registry(tracking_uri, stack.MODEL, EXPERIMENT)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run_id = registry.start_run("benchmark-monitoring")
        dataset = training.ingest(params, stack.PROJECT_ROOT)
        data_report = training.validate_data(dataset, registry, run_id, work)
        trained = training.train(dataset, params, registry, run_id, work / "plots")
        model_report = training.validate_model(trained, params, registry, run_id, work)
        result = training.register(
            trained,
            dataset,
            data_report,
            model_report,
            params,
            registry,
            run_id,
            stack.PROJECT_ROOT,
        )
        registry.end_run(run_id, succeeded=True)
    if not result.promoted or result.version is None:
        raise RuntimeError(f"the benchmark's model did not become champion: {result.reason}")
    return {
        "seconds": time.perf_counter() - started,
        "version": result.version.version,
        "roc_auc": result.metrics.get("holdout_roc_auc"),
    }


@dataclass(frozen=True)
class Pool:
    """The real rows that synthetic predictions are drawn from, scored by the champion."""

    rows: list[dict[str, Any]]
    scores: list[float]
    subscribed: list[bool]


def scored_pool(model: Any) -> Pool:
    """Return all 41,188 rows as logged features, with the champion's score and the label."""
    from telescore.core.schema import FEATURES

    features, labels = stack.load_dataset()
    scores = model.predict_proba(features)[:, 1]
    rows = features[list(FEATURES)].to_dict(orient="records")
    return Pool(rows, [float(each) for each in scores], [bool(each) for each in labels])


def log_window(
    uri: str, database: str, size: int, version: str, pool: Pool, seed: int
) -> dict[str, float]:
    """Log `size` predictions drawn from the pool into [WINDOW_START, +60 min); label a share."""
    import numpy as np

    from telescore.core.outcomes import Outcome
    from telescore.core.prediction_ids import PredictionIds
    from telescore.core.predictions import ServedModel, prediction_records
    from telescore.io.outcome_store import OutcomeStore
    from telescore.io.prediction_store import PredictionStore

    rng = np.random.default_rng(seed)
    ids = PredictionIds()
    model = ServedModel(stack.MODEL, version, "champion")
    labelled: list[Outcome] = []
    inserted = recorded = 0.0
    with (
        PredictionStore(uri, database, timeout_ms=READ_TIMEOUT_MS) as predictions,
        OutcomeStore(uri, database, timeout_ms=READ_TIMEOUT_MS) as outcomes,
    ):
        predictions.ensure_indexes()
        for offset in range(0, size, REQUEST_ROWS):
            count = min(REQUEST_ROWS, size - offset)
            drawn = rng.integers(0, len(pool.rows), count).tolist()
            request_ids = ids.new(count)
            records = prediction_records(
                prediction_ids=request_ids,
                request_id=f"benchmark-{offset}",
                model=model,
                rows=[pool.rows[index] for index in drawn],
                scores=[pool.scores[index] for index in drawn],
                latency_ms=0.5,
                out_of_range=[[] for _ in request_ids],
                timestamp=WINDOW_START + timedelta(minutes=60) * offset / size,
            )
            started = time.perf_counter()
            stored = predictions.insert(records).stored
            inserted += time.perf_counter() - started
            if stored != count:
                raise RuntimeError(f"nx-27017 stored {stored} of {count} predictions")
            labelled += [
                Outcome(prediction_id=prediction_id, subscribed=pool.subscribed[index])
                for prediction_id, index, draw in zip(
                    request_ids, drawn, rng.random(count), strict=True
                )
                if draw < LABELLED_SHARE
            ]
            if len(labelled) >= OUTCOME_BATCH or offset + count == size:
                started = time.perf_counter()
                outcomes.record(labelled, recorded_at=WINDOW_START + timedelta(hours=2))
                recorded += time.perf_counter() - started
                labelled = []
        outcome_count = outcomes.count()
    return {"insert": inserted, "record": recorded, "outcomes": outcome_count}


# -- one run per size, in a fresh process ---------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """Return a process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux 4.0+); tell whether it worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def spawn_monitor(job: Job, mongodb: stack.Server, mlflow: stack.Server) -> dict[str, Any]:
    """Run `run_monitor(job)` in a spawned process; return its figures and who used the CPU."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=run_monitor, args=(job, sender), name=f"monitor-{job.size}")
    meter = harness.CpuMeter(
        {"nx-27017": harness.Party(mongodb.pid), "mlflow": harness.Party(mlflow.pid)}
    )
    reset = reset_peak_rss(mongodb.pid)
    start = meter.read()
    process.start()
    sender.close()
    try:
        figures: dict[str, Any] = receiver.recv()
    except EOFError:
        figures = {"error": f"the monitor process ended with code {process.exitcode}"}
    process.join()
    usage = meter.since(start)
    figures["process_wall"] = usage.wall
    figures["cores"] = usage.cores()
    figures["cpu_seconds"] = usage.seconds
    figures["nx_peak_rss"] = peak_rss_mib(mongodb.pid) if reset else math.nan
    return figures


# -- detection power of the sampling --------------------------------------------------------------


def detection_power(
    report: Report, reference: Any, model: Any, rows: int, shifts: list[float], work: Path
) -> list[dict[str, Any]]:
    """Evaluate shifted windows whole and sampled as read_window samples them; print both."""
    import numpy as np

    from telescore.core.monitoring import load_monitoring_params
    from telescore.core.schema import FEATURES
    from telescore.validation.evidently import LABEL, SCORE, evaluate_window

    params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
    # read_window's stride: the smallest power of two that keeps at most max_rows.
    step = 1
    while math.ceil(rows / step) > params.max_rows:
        step *= 2
    rng = np.random.default_rng(SEED)
    # The champion's own reference rows, drawn again: unshifted, nothing but noise drifts.
    drawn = reference.iloc[rng.integers(0, len(reference), rows)].reset_index(drop=True)
    start, end = WINDOW_START, WINDOW_START + timedelta(hours=1)
    # Evidently's first report imports plotly's validators (about a second): not a window's cost.
    evaluate_window(
        reference, drawn.head(1000), window_start=start, window_end=end, report_dir=work / "warm"
    )
    results = []
    for shift in shifts:
        current = drawn.assign(euribor3m=drawn["euribor3m"] + shift)
        current[SCORE] = model.predict_proba(current[list(FEATURES)])[:, 1]
        current = current[[*FEATURES, SCORE, LABEL]]
        figures: dict[str, Any] = {"shift": shift}
        for name, frame in (("full", current), ("sampled", current.iloc[::step])):
            started = time.perf_counter()
            evaluation = evaluate_window(
                reference,
                frame.reset_index(drop=True),
                window_start=start,
                window_end=end,
                report_dir=work / name,
                options=params.drift,
            )
            seconds = time.perf_counter() - started
            metrics = evaluation.report.metrics
            figures[name] = {
                "rows": len(frame),
                "seconds": seconds,
                "euribor3m": metrics["drift.euribor3m"],
                "flagged": "euribor3m" in evaluation.report.details["drifted_features"],
                "prediction_drift": metrics["prediction_drift"],
                "drifted_features": metrics["drifted_features"],
                "passed": evaluation.report.passed,
            }
        report.log(
            f"shift {shift:+.2f}: euribor3m {figures['full']['euribor3m']:.4f} whole, "
            f"{figures['sampled']['euribor3m']:.4f} sampled"
        )
        results.append(figures)
        del current
    threshold = params.drift.numerical_threshold
    table = []
    for each in results:
        full, sampled = each["full"], each["sampled"]
        table.append(
            [
                f"{each['shift']:+.2f}",
                f"{full['euribor3m']:.4f} / {sampled['euribor3m']:.4f}",
                f"{'yes' if full['flagged'] else 'no'} / {'yes' if sampled['flagged'] else 'no'}",
                f"{full['prediction_drift']:.4f} / {sampled['prediction_drift']:.4f}",
                f"{full['drifted_features']:.0f} / {sampled['drifted_features']:.0f}",
                " / ".join("pass" if each["passed"] else "FAIL" for each in (full, sampled)),
                f"{full['seconds']:.1f} / {sampled['seconds']:.1f}",
            ]
        )
    report.table(
        f"Detection power: {rows:,} rows whole / sampled as read_window does (every {step}th: "
        f"{math.ceil(rows / step):,} rows), against the champion's {len(reference):,} "
        "reference rows",
        [
            "euribor3m shift",
            "euribor3m drift score",
            f"flagged (>= {threshold})",
            "prediction drift",
            "inputs drifted",
            "window verdict",
            "Evidently s",
        ],
        table,
        f"{params.drift.numerical_method} / {params.drift.categorical_method}, thresholds "
        f"{threshold} / {params.drift.categorical_threshold}; each cell: whole / sampled; the "
        "score is re-predicted on the shifted rows",
    )
    return results


# -- report ---------------------------------------------------------------------------------------


def print_runs(report: Report, runs: dict[int, dict[str, Any]], setup: dict[int, Any]) -> None:
    """Print the runs side by side, where their time went, and the targets."""
    rows = []
    for size, run in runs.items():
        if "error" in run:
            rows.append([f"{size:,}", "failed: see the log"])
            continue
        sampled = run["sampled_every"] or 1
        rows.append(
            [
                f"{size:,}",
                setup[size]["outcomes"],
                run["rows"],
                f"every {sampled}th" if sampled > 1 else "no",
                run["wall"],
                run["wall"] / size * 100_000,
                run["peak_rss"],
                run["rss_before"],
                run["nx_peak_rss"],
                run["imports"],
                run["verdict"],
            ]
        )
    report.table(
        "One monitor run per window, each in a fresh process (monitor_window, dry run)",
        [
            "predictions",
            "outcomes",
            "rows read",
            "sampled",
            "run s",
            "s per 100k",
            "peak RSS MiB",
            "RSS before MiB",
            "nx-27017 peak MiB",
            "imports s",
            "verdict",
        ],
        rows,
        "run s: monitor_window alone; peak RSS: the monitor's process, imports included; RSS "
        "before: after the imports; nx-27017 peak: the server's VmHWM during the run",
    )
    parts = []
    for size, run in runs.items():
        if "error" in run:
            continue
        seconds = run["parts"]
        read = seconds["read"] - seconds["join"]
        frame = seconds["read_window"] - seconds["read"]
        counted = seconds["read_window"] + seconds["reference"] + seconds["evidently"]
        counted += seconds["snapshot"] + seconds["dashboard"]
        cores = run["cores"]
        parts.append(
            [
                f"{size:,}",
                read,
                seconds["join"],
                frame,
                seconds["reference"],
                seconds["evidently"],
                seconds["snapshot"] + seconds["dashboard"],
                run["wall"] - counted,
                run["wall"],
                f"{cores['client']:.2f} / {cores['nx-27017']:.2f} / {cores['other']:.2f}",
            ]
        )
    report.table(
        "Where a run's time goes, s",
        [
            "predictions",
            "read (nx)",
            "$in join",
            "frame",
            "reference",
            "Evidently",
            "snapshot",
            "rest",
            "total",
            "cores: monitor / nx / other",
        ],
        parts,
        "read: labelled_predictions less its $in joins (nx-27017 "
        "loads, sorts and sends the window, pymongo decodes it); frame: read_window's own loop; "
        "reference: the champion's training rows, scored (cached snapshot); Evidently: "
        "evaluate_window with its HTML; snapshot: the workspace's files; cores over the whole "
        "process, imports included",
    )
    largest = runs.get(TARGET_ROWS)
    if largest and "error" not in largest:
        seconds, mib = largest["wall"], largest["peak_rss"]
        report.line(
            f"\nTargets at {TARGET_ROWS:,} predictions: {seconds:.0f} s "
            f"({'met' if seconds <= TARGET_SECONDS else 'MISSED'}, target {TARGET_SECONDS:.0f} s)"
            f", peak RSS {mib:.0f} MiB ({'met' if mib <= TARGET_MIB else 'MISSED'}, target "
            f"{TARGET_MIB:.0f} MiB)"
        )
    done = [(size, run) for size, run in runs.items() if "error" not in run]
    for (small, first), (large, second) in zip(done, done[1:], strict=False):
        report.line(
            f"  {small:,} -> {large:,} predictions ({large / small:.0f}x): run time "
            f"{second['wall'] / first['wall']:.1f}x, read from nx-27017 "
            f"{_nx(second) / _nx(first):.1f}x, peak RSS "
            f"{second['peak_rss'] / first['peak_rss']:.2f}x"
        )


def _nx(run: dict[str, Any]) -> float:
    return float(run["parts"]["read"] - run["parts"]["join"])


def _join(run: dict[str, Any]) -> float:
    return float(run["parts"]["join"])


def print_profile(report: Report, path: Path, lines: int = 20) -> None:
    """Print the functions the profiled run spent most time in, by their own time."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(lines)
    report.line("\ncProfile of the largest run (the monitor's process only), by own time:")
    for line in buffer.getvalue().splitlines():
        if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced", "/")):
            report.line("  " + line.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in SIZES),
        help="predictions per window, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--shifts",
        default=",".join(str(shift) for shift in SHIFTS),
        help="euribor3m shifts for the detection power, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--detection-rows",
        type=int,
        default=0,
        help="rows of the detection windows (default: the largest size); 0 or less: skip",
    )
    parser.add_argument("--skip-detection", action="store_true", help="no detection power")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the largest run and print the top"
    )
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    shifts = [float(shift) for shift in args.shifts.split(",")]
    detection_rows = args.detection_rows or max(sizes)
    report = Report("monitoring")
    report.data |= {"sizes": sizes, "labelled_share": LABELLED_SHARE}
    report.log(f"sizes {sizes}; idle machine: {harness.idle_cores():.2f} cores busy")
    runs: dict[int, dict[str, Any]] = {}
    setup: dict[int, dict[str, float]] = {}
    detection: list[dict[str, Any]] = []
    with stack.Stack("monitoring") as services:
        tracking = services.mlflow()
        mongodb = services.mongodb()
        report.log(f"MLflow at {tracking}, nx-27017 at {mongodb.url}")
        trained = train_champion(tracking, services.dir / "training")
        report.log(
            f"champion: version {trained['version']}, trained on all rows in "
            f"{trained['seconds']:.1f} s (holdout ROC AUC {trained['roc_auc']:.4f})"
        )
        from telescore.core.monitoring import load_monitoring_params
        from telescore.io.registry import CHAMPION, Registry
        from telescore.jobs import monitoring

        params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
        registry = Registry(tracking, stack.MODEL, EXPERIMENT)
        champion = registry.alias_version(CHAMPION)
        if champion is None:
            raise RuntimeError("no champion after training")
        model = registry.load_model(champion)
        cache_dir = services.dir / "reference-cache"
        # Also fills the cache every run reads: a scheduled monitor has its snapshot already.
        reference = monitoring.champion_reference(
            registry, champion, cache_dir, params.reference_rows
        )
        pool = scored_pool(model)
        for size in sizes:
            database = f"monitor_{size}"
            started = time.perf_counter()
            setup[size] = log_window(mongodb.url, database, size, champion.version, pool, SEED)
            setup[size]["seconds"] = time.perf_counter() - started
            report.log(
                f"{size:,} predictions logged in {setup[size]['insert']:.1f} s "
                f"({size / setup[size]['insert']:,.0f} rows/s into nx-27017), "
                f"{setup[size]['outcomes']:,.0f} outcomes recorded in "
                f"{setup[size]['record']:.1f} s"
            )
        for size in sizes:
            profile = ""
            if args.profile and size == max(sizes):
                profile = str(services.dir / f"monitoring-{size}.pstats")
            job = Job(
                size=size,
                mongodb_uri=mongodb.url,
                database=f"monitor_{size}",
                tracking_uri=tracking,
                model_name=stack.MODEL,
                experiment=EXPERIMENT,
                window_start=WINDOW_START,
                window_end=WINDOW_START + timedelta(minutes=params.window_minutes),
                state_dir=str(services.dir / f"state-{size}"),
                cache_dir=str(cache_dir),
                profile_path=profile,
            )
            report.log(f"monitoring the {size:,}-prediction window in a fresh process")
            runs[size] = spawn_monitor(job, mongodb, services.servers["mlflow"])
            if "error" in runs[size]:
                report.log(f"the run failed:\n{runs[size]['error']}")
            else:
                report.log(
                    f"{size:,}: {runs[size]['wall']:.1f} s, peak RSS "
                    f"{runs[size]['peak_rss']:.0f} MiB, verdict {runs[size]['verdict']!r}"
                )
        print_runs(report, runs, setup)
        if args.profile and runs.get(max(sizes), {}).get("wall"):
            print_profile(report, services.dir / f"monitoring-{max(sizes)}.pstats")
        if not args.skip_detection and detection_rows > 0:
            report.log(f"detection power on {detection_rows:,} rows, shifts {shifts}")
            detection = detection_power(
                report, reference, model, detection_rows, shifts, services.dir / "detection"
            )
    report.data |= {"setup": setup, "runs": runs, "detection": detection, "trained": trained}
    panels = [
        Panel(
            "one monitor run, s",
            {
                f"{size:,}": {"run": run["wall"], "of which nx-27017": _nx(run) + _join(run)}
                for size, run in runs.items()
                if "wall" in run
            },
            TARGET_SECONDS,
        ),
        Panel(
            "peak RSS of the monitor's process, MiB",
            {f"{size:,}": {"peak": run["peak_rss"]} for size, run in runs.items() if "wall" in run},
            TARGET_MIB,
        ),
    ]
    report.save(panels, "telescore monitor: one run per window size (targets at 1M: dashed)")


if __name__ == "__main__":
    main()
