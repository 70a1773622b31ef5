"""Time and peak memory of one monitor run on windows of 10k, 100k and 1M logged predictions.

    .venv/bin/python -m benchmarks.monitoring [--sizes 10000,100000,1000000] [--skip-detection]

One dry `jobs.monitoring.monitor_window` run per size, in a fresh process, on a window of logged
predictions scored by a champion `jobs.training.run_training` trained; then the detection power
of the sampling above `monitoring.max_rows` (docs/benchmarks/monitoring.md). Prints, writes
benchmarks/results/monitoring.{json,png}, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import math
import multiprocessing
import resource
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

SIZES = (10_000, 100_000, 1_000_000)
SHIFTS = (0.0, 0.05, 0.1, 0.2, 0.5)
LABELLED_SHARE = 0.3
REQUEST_ROWS = 1_000  # rows per logged request (one timestamp, one insert_many)
OUTCOME_BATCH = 5_000
WINDOW_START = datetime(2026, 3, 2, 10, tzinfo=UTC)
READ_TIMEOUT_MS = 900_000  # while logging: nx-27017 counts 1M rows in about a minute
TARGET_SECONDS, TARGET_MIB, TARGET_ROWS = 120.0, 2048.0, 1_000_000
SEED = 20261123
# The tables' columns, and the detection table's cells after the shift (whole / sampled).
RUN_COLUMNS = "predictions|outcomes|rows read|sampled|run s|s per 100k|peak RSS MiB|RSS before MiB"
RUN_COLUMNS += "|nx-27017 peak MiB|imports s|verdict"
PART_COLUMNS = "predictions|read (nx)|$in join|frame|reference|Evidently|snapshot|rest|total"
PART_COLUMNS += "|cores: monitor / nx / other"
DETECTION_COLUMNS = "euribor3m shift|euribor3m drift score|flagged (>= {})|prediction drift"
DETECTION_COLUMNS += "|inputs drifted|window verdict|Evidently s"
CELLS: list[tuple[str, Callable[[Any], str]]] = [
    ("euribor3m", "{:.4f}".format),
    ("flagged", lambda flagged: "yes" if flagged else "no"),
    ("prediction_drift", "{:.4f}".format),
    ("drifted_features", "{:.0f}".format),
    ("passed", lambda passed: "pass" if passed else "FAIL"),
    ("seconds", "{:.1f}".format),
]


def memory_mib(field: str, pid: int | str = "self") -> float:
    """Return a process's VmRSS (now) or VmHWM (peak) from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return math.nan


def monitor_once(settings: Any, window: Any, cache_dir: Path) -> dict[str, Any]:
    """Import, open the Monitor as pipelines/monitoring.py does, run it once, time its parts.

    `settings` name the window's database and state folder; `cache_dir` holds the champion's
    reference rows, cached by the parent as a scheduled monitor has them.
    """
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    # Evidently is imported inside its adapter: import it here, so that the run's time is the
    # work on the window, told apart from the imports (once per process).
    import evidently.metrics
    import evidently.presets  # noqa: F401

    from telescore.io.context import Context
    from telescore.io.params_files import load_monitoring_params
    from telescore.jobs import monitoring

    imports = time.perf_counter() - started
    params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
    with Context(settings) as ctx, tempfile.TemporaryDirectory() as work:
        # A dry run: it decides, but triggers no training and serves no offset.
        monitor = monitoring.open_monitor(ctx, params, "params.yaml")
        monitor = replace(monitor, prefect_api=None, serve_offset=None, cache_dir=cache_dir)
        parts, rss_before = instrument(monitoring, monitor), memory_mib("VmRSS")
        began = time.perf_counter()
        result = monitoring.monitor_window(monitor, window, Path(work))
        wall = time.perf_counter() - began
        figures = monitor.records.run(window.key) or {}
    kept = "predictions rows labelled_rows sampled_every verdict share_drifted_features"
    figures = {key: figures.get(key) for key in f"{kept} drift_euribor3m".split()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    figures |= {"imports": imports, "wall": wall, "parts": parts, "rss_before": rss_before}
    return figures | {"peak_rss": peak, "retrain": result.decision.get("retrain")}


def instrument(monitoring: Any, monitor: Any) -> dict[str, float]:
    """Time the monitor's parts in place; return the dict the seconds accumulate in."""
    seconds: dict[str, float] = {}
    timed = functools.partial(harness.timed_into, seconds)

    def timed_chunks(name: str, function: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        pull = timed(name, next)  # the generator's own work, inside each `next`, not its caller's

        def call(*args: Any, **kwargs: Any) -> Iterator[Any]:
            chunks = function(*args, **kwargs)
            while (chunk := pull(chunks, None)) is not None:
                yield chunk

        return call

    outcomes, workspace = monitor.outcomes, monitor.workspace
    # Instance attributes: the store's own calls (labelled_predictions -> get_many) see them.
    outcomes.get_many = timed("join", outcomes.get_many)
    outcomes.labelled_predictions = timed_chunks("read", outcomes.labelled_predictions)
    monitoring.read_window = timed("read_window", monitoring.read_window)
    monitoring.champion_reference = timed("reference", monitoring.champion_reference)
    validator = monitoring.EvidentlyValidator
    validator.validate = timed("evidently", validator.validate)
    workspace.save_window = timed("snapshot", workspace.save_window)
    workspace.write_dashboard = timed("dashboard", workspace.write_dashboard)
    return seconds


def train_champion(ctx: Any) -> tuple[dict[str, Any], Any]:
    """Train on all rows with the training job the flow runs: its figures, the champion."""
    from telescore.io.params_files import load_training_params
    from telescore.jobs import training

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    started = time.perf_counter()
    params = load_training_params(stack.PROJECT_ROOT / "params.yaml")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = training.run_training(ctx, params, stack.PROJECT_ROOT)
    if not result.promoted or result.version is None:
        raise RuntimeError(f"the benchmark's model did not become champion: {result.reason}")
    seconds, version = time.perf_counter() - started, result.version.version
    figures = {"seconds": seconds, "version": version}
    return figures | {"roc_auc": result.metrics["holdout_roc_auc"]}, result.version


def window_settings(settings: Any, size: int, folder: Path) -> Any:
    """Return the stack's settings with the window's own database and state folder."""
    mongodb = settings.mongodb.model_copy(update={"database": f"monitor_{size}"})
    project = settings.project.model_copy(update={"state_dir": folder / f"state-{size}"})
    return settings.model_copy(update={"mongodb": mongodb, "project": project})


def log_window(ctx: Any, size: int, version: str, pool: tuple, seed: int) -> dict[str, float]:
    """Log `size` predictions drawn from the pool into [WINDOW_START, +60 min); label a share.

    The pool: all 41,188 rows as logged features, the champion's scores and the labels.
    """
    import numpy as np

    from telescore.core.outcomes import Outcome
    from telescore.core.prediction_ids import PredictionIds
    from telescore.core.predictions import ServedModel, prediction_records
    from telescore.io.outcome_store import OutcomeStore
    from telescore.io.prediction_store import PredictionStore

    (rows, scores, subscribed), rng, ids = pool, np.random.default_rng(seed), PredictionIds()
    model = ServedModel(stack.MODEL, version, "champion")
    predictions = ctx.store(PredictionStore, timeout_ms=READ_TIMEOUT_MS)
    outcomes = ctx.store(OutcomeStore, timeout_ms=READ_TIMEOUT_MS)
    predictions.ensure_indexes()
    labelled: list[Outcome] = []
    inserted = recorded = 0.0
    for offset in range(0, size, REQUEST_ROWS):
        count = min(REQUEST_ROWS, size - offset)
        drawn, request_ids = rng.integers(0, len(rows), count).tolist(), ids.new(count)
        picked = [rows[index] for index in drawn], [scores[index] for index in drawn]
        no_ranges: list[list[str]] = [[] for _ in drawn]
        timestamp = WINDOW_START + timedelta(minutes=60) * offset / size
        records = prediction_records(
            request_ids, f"benchmark-{offset}", model, *picked, 0.5, no_ranges, timestamp
        )
        started = time.perf_counter()
        stored = predictions.insert(records).stored
        inserted += time.perf_counter() - started
        if stored != count:
            raise RuntimeError(f"nx-27017 stored {stored} of {count} predictions")
        draws = zip(request_ids, drawn, rng.random(count), strict=True)
        kept = [(each, index) for each, index, draw in draws if draw < LABELLED_SHARE]
        labelled += [
            Outcome(prediction_id=each, subscribed=subscribed[index]) for each, index in kept
        ]
        if len(labelled) >= OUTCOME_BATCH or offset + count == size:
            started = time.perf_counter()
            outcomes.record(labelled, recorded_at=WINDOW_START + timedelta(hours=2))
            recorded += time.perf_counter() - started
            labelled = []
    return {"insert": inserted, "record": recorded, "outcomes": outcomes.count()}


def spawn_monitor(job: tuple, mongodb: stack.Server, mlflow: stack.Server) -> dict[str, Any]:
    """Run `monitor_once(*job)` in a fresh spawned process; return its figures and the CPU used."""
    parties = {"nx-27017": harness.Party(mongodb.pid), "mlflow": harness.Party(mlflow.pid)}
    meter, reset = harness.CpuMeter(parties), False
    with contextlib.suppress(OSError):  # nx-27017's VmHWM back to its current RSS (Linux 4.0+)
        reset = bool(Path(f"/proc/{mongodb.pid}/clear_refs").write_text("5"))
    start = meter.read()
    try:  # the pool's one worker is reaped on the way out: its CPU counts as this process's
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            figures = pool.submit(monitor_once, *job).result()
    except Exception:  # the run's error is printed; the other sizes still run
        figures = {"error": traceback.format_exc()}
    usage = meter.since(start)
    figures |= {"process_wall": usage.wall, "cores": usage.cores(), "cpu_seconds": usage.seconds}
    return figures | {"nx_peak_rss": memory_mib("VmHWM", mongodb.pid) if reset else math.nan}


def detection_power(
    report: Report, reference: Any, model: Any, rows: int, shifts: list[float], work: Path
) -> list[dict[str, Any]]:
    """Evaluate shifted windows whole and sampled as read_window samples them; print both."""
    import numpy as np

    from telescore.core.schema import FEATURES
    from telescore.io.params_files import load_monitoring_params
    from telescore.validation.evidently import LABEL, SCORE, EvidentlyValidator

    params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
    drift, step = params.drift, 1
    while math.ceil(rows / step) > params.max_rows:  # read_window's stride: a power of two
        step *= 2
    rng = np.random.default_rng(SEED)
    # The champion's own reference rows, drawn again: unshifted, nothing but noise drifts.
    drawn = reference.iloc[rng.integers(0, len(reference), rows)].reset_index(drop=True)
    start, end = WINDOW_START, WINDOW_START + timedelta(hours=1)
    # Evidently's first report imports plotly's validators (about a second): not a window's cost.
    EvidentlyValidator(start, end).validate(drawn.head(1000), reference=reference, report_dir=work)
    results = []
    for shift in shifts:
        current = drawn.assign(euribor3m=drawn["euribor3m"] + shift)
        current[SCORE] = model.predict_proba(current[list(FEATURES)])[:, 1]
        current = current[[*FEATURES, SCORE, LABEL]]
        figures: dict[str, Any] = {"shift": shift}
        for name, frame in (("full", current), ("sampled", current.iloc[::step])):
            started = time.perf_counter()
            evaluation = EvidentlyValidator(start, end, drift).validate(
                frame.reset_index(drop=True), reference=reference, report_dir=work / name
            )
            metrics, seconds = evaluation.metrics, time.perf_counter() - started
            figures[name] = {"rows": len(frame), "seconds": seconds, "passed": evaluation.passed}
            figures[name] |= {key: metrics[key] for key in ("prediction_drift", "drifted_features")}
            figures[name]["euribor3m"] = metrics["drift.euribor3m"]
            figures[name]["flagged"] = "euribor3m" in evaluation.details["drifted_features"]
        full, sampled = figures["full"]["euribor3m"], figures["sampled"]["euribor3m"]
        report.log(f"shift {shift:+.2f}: euribor3m {full:.4f} whole, {sampled:.4f} sampled")
        results.append(figures)
        del current
    report.table(
        f"Detection power: {rows:,} rows whole / sampled as read_window does (every {step}th: "
        f"{math.ceil(rows / step):,} rows), against the champion's {len(reference):,} "
        "reference rows",
        DETECTION_COLUMNS.format(drift.numerical_threshold).split("|"),
        [
            [f"{each['shift']:+.2f}"]
            + [f"{show(each['full'][key])} / {show(each['sampled'][key])}" for key, show in CELLS]
            for each in results
        ],
        f"{drift.numerical_method} / {drift.categorical_method}, thresholds "
        f"{drift.numerical_threshold} / {drift.categorical_threshold}; each cell: whole / "
        "sampled; the score is re-predicted on the shifted rows",
    )
    return results


def print_runs(report: Report, runs: dict[int, dict[str, Any]], setup: dict[int, Any]) -> None:
    """Print the runs side by side, where their time went, and the targets."""
    done = {size: run for size, run in runs.items() if "error" not in run}
    rows: list[list[Any]] = []
    for size, run in runs.items():
        if size not in done:
            rows.append([f"{size:,}", "failed: see the log"])
            continue
        sampled = run["sampled_every"] or 1
        rows.append([f"{size:,}", setup[size]["outcomes"], run["rows"]])
        rows[-1] += [f"every {sampled}th" if sampled > 1 else "no", run["wall"]]
        rows[-1] += [run["wall"] / size * 100_000, run["peak_rss"], run["rss_before"]]
        rows[-1] += [run["nx_peak_rss"], run["imports"], run["verdict"]]
    report.table(
        "One monitor run per window, each in a fresh process (monitor_window, dry run)",
        RUN_COLUMNS.split("|"),
        rows,
        "run s: monitor_window alone; peak RSS: the monitor's process, imports included; RSS "
        "before: after the imports; nx-27017 peak: the server's VmHWM during the run",
    )
    rows = []
    for size, run in done.items():
        seconds, cores = run["parts"], run["cores"]
        frame = seconds["read_window"] - seconds["read"]
        written = seconds["snapshot"] + seconds["dashboard"]
        counted = seconds["read_window"] + seconds["reference"] + seconds["evidently"] + written
        rows.append([f"{size:,}", _nx(run), seconds["join"], frame, seconds["reference"]])
        rows[-1] += [seconds["evidently"], written, run["wall"] - counted, run["wall"]]
        rows[-1] += [f"{cores['client']:.2f} / {cores['nx-27017']:.2f} / {cores['other']:.2f}"]
    report.table(
        "Where a run's time goes, s",
        PART_COLUMNS.split("|"),
        rows,
        "read: labelled_predictions less its $in joins (nx-27017 loads, sorts and sends the "
        "window, pymongo decodes it); frame: read_window's own loop; reference: the champion's "
        "training rows, scored (cached snapshot); Evidently: the validator with its HTML; "
        "snapshot: the workspace's files; cores over the whole process, imports included",
    )
    if largest := done.get(TARGET_ROWS):
        seconds, mib, met = largest["wall"], largest["peak_rss"], {True: "met", False: "MISSED"}
        report.line(
            f"\nTargets at {TARGET_ROWS:,} predictions: {seconds:.0f} s "
            f"({met[seconds <= TARGET_SECONDS]}, target {TARGET_SECONDS:.0f} s), peak RSS "
            f"{mib:.0f} MiB ({met[mib <= TARGET_MIB]}, target {TARGET_MIB:.0f} MiB)"
        )
    pairs = list(done.items())
    for (small, first), (large, second) in zip(pairs, pairs[1:], strict=False):
        report.line(
            f"  {small:,} -> {large:,} predictions ({large / small:.0f}x): run time "
            f"{second['wall'] / first['wall']:.1f}x, read from nx-27017 "
            f"{_nx(second) / _nx(first):.1f}x, peak RSS "
            f"{second['peak_rss'] / first['peak_rss']:.2f}x"
        )


def _nx(run: dict[str, Any]) -> float:
    """Seconds nx-27017 and pymongo took to read the window, the $in joins aside."""
    return float(run["parts"]["read"] - run["parts"]["join"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, values in (("sizes", SIZES), ("shifts", SHIFTS)):
        parser.add_argument(f"--{name}", default=",".join(map(str, values)), help="comma-separated")
    parser.add_argument("--detection-rows", type=int, default=0, help="default: the largest size")
    parser.add_argument("--skip-detection", action="store_true", help="no detection power")
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
        from telescore.core.monitoring import Window
        from telescore.core.schema import FEATURES
        from telescore.io.context import Context
        from telescore.io.params_files import load_monitoring_params
        from telescore.jobs import monitoring

        ctx, mongodb = services.context, services.mongodb()
        report.log(f"MLflow at {ctx.tracking_uri}, nx-27017 at {mongodb.url}")
        trained, champion = train_champion(ctx)
        report.log(
            f"champion: version {trained['version']}, trained on all rows in "
            f"{trained['seconds']:.1f} s (holdout ROC AUC {trained['roc_auc']:.4f})"
        )
        params = load_monitoring_params(stack.PROJECT_ROOT / "params.yaml")
        model, cache_dir = ctx.registry.load_model(champion), services.dir / "reference-cache"
        # Also fills the cache every run reads: a scheduled monitor has its snapshot already.
        reference = monitoring.champion_reference(
            ctx.registry, champion, cache_dir, params.reference_rows
        )
        features, labels = stack.load_dataset()
        scores = [float(each) for each in model.predict_proba(features)[:, 1]]
        pool = features[list(FEATURES)].to_dict(orient="records"), scores, [bool(y) for y in labels]
        for size in sizes:
            started = time.perf_counter()
            with Context(window_settings(ctx.settings, size, services.dir)) as window_ctx:
                setup[size] = log_window(window_ctx, size, champion.version, pool, SEED)
            setup[size]["seconds"] = time.perf_counter() - started
            insert, record = setup[size]["insert"], setup[size]["record"]
            report.log(
                f"{size:,} predictions logged in {insert:.1f} s ({size / insert:,.0f} rows/s into "
                f"nx-27017), {setup[size]['outcomes']:,.0f} outcomes recorded in {record:.1f} s"
            )
        window = Window(WINDOW_START, WINDOW_START + timedelta(minutes=params.window_minutes))
        for size in sizes:
            report.log(f"monitoring the {size:,}-prediction window in a fresh process")
            job = (window_settings(ctx.settings, size, services.dir), window, cache_dir)
            runs[size] = run = spawn_monitor(job, mongodb, services.servers["mlflow"])
            report.log(
                f"the run failed:\n{run['error']}"
                if "error" in run
                else f"{size:,}: {run['wall']:.1f} s, peak RSS {run['peak_rss']:.0f} MiB, "
                f"verdict {run['verdict']!r}"
            )
        print_runs(report, runs, setup)
        if not args.skip_detection and detection_rows > 0:
            report.log(f"detection power on {detection_rows:,} rows, shifts {shifts}")
            detection = detection_power(
                report, reference, model, detection_rows, shifts, services.dir / "detection"
            )
    report.data |= {"setup": setup, "runs": runs, "detection": detection, "trained": trained}
    done = {f"{size:,}": run for size, run in runs.items() if "wall" in run}
    times = {
        key: {"run": run["wall"], "of which nx-27017": run["parts"]["read"]}
        for key, run in done.items()
    }
    panels = [Panel("one monitor run, s", times, TARGET_SECONDS)]
    peaks = {key: {"peak": run["peak_rss"]} for key, run in done.items()}
    panels += [Panel("peak RSS of the monitor's process, MiB", peaks, TARGET_MIB)]
    report.save(panels, "telescore monitor: one run per window size (targets at 1M: dashed)")


if __name__ == "__main__":
    main()
