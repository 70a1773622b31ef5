"""Time the training pipeline on all 41,188 rows, step by step, against a bare scikit-learn fit.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.training [--skip-prefect]

It starts an MLflow server of its own (start-up reported, not counted) and calls the
`telescore.jobs.training` functions in-process twice, as the flow's tasks do: run 1 meets an
empty registry, run 2 a champion to beat. Each step's wall time is split into MLflow calls and
the rest, and comes with the cores this process, the MLflow server and everything else used
meanwhile. Imports are timed apart: Great Expectations and Deepchecks take seconds, once per
process. Run 3 is the Prefect flow itself against a Prefect server of its own (the one
`telescore up` runs), started after runs 1-2 so that its loops do not slow them; its overhead
is the flow's wall time less its tasks' recorded times.

Prints, writes benchmarks/results/training.{json,png}, asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

FLOOR_REPEATS = 3
# Imported in this order, each timed on top of the ones before (shared dependencies count once).
IMPORTS = {
    "pandas, scikit-learn, matplotlib, MLflow (jobs.training)": ["telescore.jobs.training"],
    "Great Expectations": [
        "great_expectations",
        "great_expectations.render.renderer",
        "great_expectations.render.view",
    ],
    "Deepchecks": ["deepchecks.tabular", "deepchecks.tabular.checks", "deepchecks.core"],
}
# Every Registry method that talks to MLflow; none calls another, so none counts twice.
REGISTRY_CALLS = "start_run end_run log log_model register alias_version set_alias load_model"
# The Prefect task that wraps each step (the flow opens and closes the MLflow run itself).
STEP_TASKS = {
    "ingest": "ingest",
    "GX validation": "validate-data",
    "train": "train",
    "Deepchecks": "validate-model",
    "MLflow log + register": "register",
}
T = TypeVar("T")


def time_imports() -> dict[str, float]:
    """Import the heavy libraries once, timing each group on top of the ones before."""
    seconds = {}
    for label, modules in IMPORTS.items():
        started = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        seconds[label] = time.perf_counter() - started
    return seconds


def timed_registry(tracking_uri: str) -> Any:
    """Return a Registry whose `calls` add up the seconds spent in each MLflow call."""
    from telescore.io.registry import Registry
    from telescore.settings import load_settings

    settings = load_settings().mlflow
    registry = Registry(tracking_uri, settings.model_name, settings.experiment)
    registry.calls = dict.fromkeys(REGISTRY_CALLS.split(), 0.0)  # type: ignore[attr-defined]

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                registry.calls[name] += time.perf_counter() - started  # type: ignore[attr-defined]

        return call

    for name in registry.calls:  # type: ignore[attr-defined]
        setattr(registry, name, timed(name, getattr(registry, name)))
    return registry


def run_jobs(params: Any, tracking_uri: str, work: Path, meter: harness.CpuMeter) -> dict[str, Any]:
    """Run the five jobs in-process, as the flow's tasks do; time and meter every step."""
    from telescore.jobs import training

    registry = timed_registry(tracking_uri)
    steps: dict[str, dict[str, Any]] = {}

    def step(name: str, call: Callable[[], T]) -> T:
        mlflow_before, start = sum(registry.calls.values()), meter.read()
        result = call()
        usage = meter.since(start)
        steps[name] = {
            "wall": usage.wall,
            "mlflow": sum(registry.calls.values()) - mlflow_before,
            "cores": usage.cores(),
        }
        return result

    run_id = step("start run", lambda: registry.start_run("benchmark"))
    dataset = step("ingest", lambda: training.ingest(params, stack.PROJECT_ROOT))
    data_report = step(
        "GX validation", lambda: training.validate_data(dataset, registry, run_id, work)
    )
    trained = step(
        "train", lambda: training.train(dataset, params, registry, run_id, work / "plots")
    )
    model_report = step(
        "Deepchecks", lambda: training.validate_model(trained, params, registry, run_id, work)
    )
    result = step(
        "MLflow log + register",
        lambda: training.register(
            trained,
            dataset,
            data_report,
            model_report,
            params,
            registry,
            run_id,
            stack.PROJECT_ROOT,
        ),
    )
    step("end run", lambda: registry.end_run(run_id, succeeded=True))
    return {
        "steps": steps,
        "total": sum(each["wall"] for each in steps.values()),
        "mlflow_calls": registry.calls,
        "fit": trained.fit_seconds,
        "roc_auc": result.metrics["holdout_roc_auc"],
        "version": result.version.version if result.version else None,
        "promoted": result.promoted,
        "dataset": dataset,
    }


def time_floor(params: Any, dataset: Any) -> list[float]:
    """Fit the bare pipeline on the same training rows a few times; return each fit's seconds."""
    from telescore.core.features import build_pipeline, split_features_label
    from telescore.core.splits import chronological_split

    features, labels = split_features_label(chronological_split(dataset.frame, params.split)[0])
    seconds = []
    for _ in range(FLOOR_REPEATS):
        pipeline, started = build_pipeline(params.model), time.perf_counter()
        pipeline.fit(features, labels)
        seconds.append(time.perf_counter() - started)
    return seconds


def run_flow(services: stack.Stack) -> dict[str, Any]:
    """Run the Prefect flow against its own server; return its wall time and its tasks' times."""
    from telescore.services.embedded import prefect_env, prefect_server
    from telescore.services.processes import free_port

    port = free_port()
    api = f"http://{stack.HOST}:{port}/api"
    # Prefect reads its settings when first imported: point it at this server before that.
    os.environ.update(prefect_env((services.dir / "prefect").resolve(), api))
    started = time.perf_counter()
    services.start(stack.Server("prefect", prefect_server(services.dir, port), api))
    server_start = time.perf_counter() - started
    started = time.perf_counter()
    from pipelines.training import train_telemarketing
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    imported = time.perf_counter()
    state = train_telemarketing(return_state=True)
    wall = time.perf_counter() - imported
    outcome, flow_run_id = state.result(), state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {
        "server_start": server_start,
        "import": imported - started,
        "wall": wall,
        "flow_run": (flow_run.end_time - flow_run.start_time).total_seconds(),
        "tasks": {
            run.name.rsplit("-", 1)[0]: (run.end_time - run.start_time).total_seconds()
            for run in task_runs
            if run.start_time and run.end_time
        },
        "roc_auc": outcome["holdout_roc_auc"],
        "version": outcome["version"],
        "promoted": outcome["promoted"],
    }


def print_report(report: Report, imports: dict, runs: list[dict], floor: list, flow: Any) -> None:
    """Print imports, the steps of every run side by side, the floor, ratios and the flow."""
    imports_total, floor_median = sum(imports.values()), statistics.median(floor)
    rows = [*imports.items(), ("total", imports_total)]
    report.table("Imports, once per process (each on top of those above)", ["modules", "s"], rows)
    tasks = flow["tasks"] if flow else {}
    rows = []
    for name in runs[0]["steps"]:
        steps = [run["steps"][name] for run in runs]
        cores = steps[-1]["cores"]
        rows.append([name, *(f"{step['wall']:.2f} ({step['mlflow']:.2f})" for step in steps)])
        rows[-1] += [tasks.get(STEP_TASKS.get(name)), cores["client"], cores["mlflow"]]
        rows[-1].append(cores["other"])
    rows.append(["  of which the scikit-learn fit", *(run["fit"] for run in runs)])
    totals = [f"{run['total']:.2f} ({sum(run['mlflow_calls'].values()):.2f})" for run in runs]
    rows.append(["total of the steps", *totals, sum(tasks.values()) if flow else None])
    rows.append(["total + imports", *(run["total"] + imports_total for run in runs)])
    report.table(
        "Steps, wall s (of which MLflow calls)",
        ["step", "run 1: new registry", "run 2: vs champion", "Prefect task (run 3)"]
        + ["run 2 cores: this", "MLflow", "other"],
        rows,
        "cores: CPU s per wall s during the step: this process, the MLflow server, the rest",
    )
    for number, run in enumerate(runs, start=1):
        calls = ", ".join(f"{k} {v:.2f}" for k, v in run["mlflow_calls"].items() if v >= 0.005)
        report.line(f"  MLflow calls, run {number}: {calls}")
    fits = ", ".join(f"{s:.2f}" for s in floor)
    report.line(f"\nFloor: build_pipeline(params.model).fit, median {floor_median:.2f} s ({fits})")
    for number, run in enumerate(runs, start=1):
        report.line(
            f"  run {number}: steps / floor {run['total'] / floor_median:.1f}x, (steps + imports) "
            f"/ floor {(run['total'] + imports_total) / floor_median:.1f}x; holdout ROC AUC "
            f"{run['roc_auc']:.4f}, version {run['version']}, promoted {run['promoted']}"
        )
    if flow:
        report.line(
            f"\nPrefect flow (run 3): flow call {flow['wall']:.2f} s = tasks "
            f"{sum(tasks.values()):.2f} s + orchestration and in-flow set-up "
            f"{flow['wall'] - sum(tasks.values()):.2f} s (Prefect recorded {flow['flow_run']:.2f} "
            f"s); flow call / floor {flow['wall'] / floor_median:.1f}x; holdout ROC AUC "
            f"{flow['roc_auc']:.4f}, version {flow['version']}, promoted {flow['promoted']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-prefect", action="store_true", help="do not run the flow")
    args = parser.parse_args()
    report = Report("training")
    imports = time_imports()
    from telescore.core.params import load_params

    params = load_params(stack.PROJECT_ROOT / "params.yaml")
    with stack.Stack("training") as services:
        started = time.perf_counter()
        tracking = services.mlflow()
        report.data["mlflow_server_start"] = time.perf_counter() - started
        meter = harness.CpuMeter({"mlflow": harness.Party(services.servers["mlflow"].pid)})
        # Run 1 meets an empty registry; run 2 scores the champion run 1 left behind.
        runs = [run_jobs(params, tracking, services.dir / f"run{n}", meter) for n in (1, 2)]
        dataset = runs[0].pop("dataset")
        runs[1].pop("dataset")
        floor = time_floor(params, dataset)
        flow = None if args.skip_prefect else run_flow(services)
    if flow:
        imports["Prefect + pipelines.training (flow only)"] = flow["import"]
    started_in = f"MLflow {report.data['mlflow_server_start']:.1f} s" + (
        f", Prefect {flow['server_start']:.1f} s" if flow else ""
    )
    report.line(
        f"\ntelescore training: {len(dataset.frame):,} rows, OMP_NUM_THREADS="
        f"{os.environ['OMP_NUM_THREADS']}; servers started in {started_in} (not counted)"
    )
    print_report(report, imports, runs, floor, flow)
    report.data |= {"imports": imports, "runs": runs, "floor": floor, "prefect": flow}
    bars = {
        name: {f"run {n}": run["steps"][name]["wall"] for n, run in enumerate(runs, start=1)}
        for name in runs[0]["steps"]
    }
    for name, task in STEP_TASKS.items():
        if flow and task in flow["tasks"]:
            bars[name]["Prefect task"] = flow["tasks"][task]
    bars["floor: bare fit"] = {"run 1": statistics.median(floor)}
    bars |= {f"import {label.split(' (')[0]}": {"imports": s} for label, s in imports.items()}
    report.save([Panel("seconds (wall)", bars)], "Training on all rows: steps, floor, imports")


if __name__ == "__main__":
    main()
