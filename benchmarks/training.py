"""Time the training pipeline on all 41,188 rows, step by step, against a bare scikit-learn fit.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.training [--skip-prefect]

Runs 1-2: `jobs.training.run_training` in-process, each step timed, MLflow apart; run 3: the
flow (docs/benchmarks/training.md). Prints, writes results/training.{json,png}, asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

IMPORTS = {  # each group on top of those before it; jobs.training imports the heavy ones lazily
    "pandas, scikit-learn, matplotlib, MLflow (jobs.training)": "telescore.jobs.training "
    "telescore.core.features telescore.core.metrics telescore.jobs.plots telescore.io.registry",
    "Great Expectations": "great_expectations.render.renderer great_expectations.render.view",
    "Deepchecks": "deepchecks.tabular.checks deepchecks.core",
}
# Every Registry method that talks to MLflow; none calls another, so none counts twice.
REGISTRY_CALLS = "start_run end_run log log_model register alias_version set_alias load_model"
# The steps of jobs.training (and of the flow's tasks), by their labels here.
STEPS = {"ingest": "ingest", "validate_data": "GX validation", "train": "train"}
STEPS |= {"validate_model": "Deepchecks", "register": "MLflow log + register"}


class Timings:
    """Times a registry's MLflow calls in place, and each step (the run's start and end too)."""

    def __init__(self, registry: Any, meter: harness.CpuMeter) -> None:
        self.meter, self.calls, self.steps = meter, dict.fromkeys(REGISTRY_CALLS.split(), 0.0), {}
        for name in self.calls:
            setattr(registry, name, harness.timed_into(self.calls, name, getattr(registry, name)))
        registry.start_run = self.step("start run", registry.start_run)
        registry.end_run = self.step("end run", registry.end_run)

    def step(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            mlflow, start = sum(self.calls.values()), self.meter.read()
            result = function(*args, **kwargs)
            usage, mlflow = self.meter.since(start), sum(self.calls.values()) - mlflow
            self.steps[label] = {"wall": usage.wall, "mlflow": mlflow, "cores": usage.cores()}
            return result

        return timed

    def run(self, ctx: Any, params: Any) -> dict[str, Any]:
        """Run the training job in-process, each step timed; return this run's figures."""
        from telescore.jobs import training

        self.calls.update(dict.fromkeys(self.calls, 0.0))  # in place: the wrappers hold it
        self.steps = {}
        steps = {name: self.step(label, getattr(training, name)) for name, label in STEPS.items()}
        timed_steps = training.TrainingSteps(**steps)
        result = training.run_training(ctx, params, stack.PROJECT_ROOT, steps=timed_steps)
        total, metrics = sum(each["wall"] for each in self.steps.values()), result.metrics
        figures = {"steps": self.steps, "total": total, "mlflow_calls": dict(self.calls)}
        figures |= {"fit": metrics["fit_seconds"], "roc_auc": metrics["holdout_roc_auc"]}
        version = result.version.version if result.version else None
        return figures | {"version": version, "promoted": result.promoted}


def time_floor(params: Any) -> tuple[list[float], int]:
    """Fit the bare pipeline on the same training rows three times: each fit's seconds, rows."""
    from telescore.core.features import build_pipeline
    from telescore.jobs import training

    dataset = training.ingest(params, stack.PROJECT_ROOT)
    (features, labels), _ = training.split_rows(dataset, params)
    seconds = []
    for _ in range(3):
        pipeline, started = build_pipeline(params.model), time.perf_counter()
        pipeline.fit(features, labels)
        seconds.append(time.perf_counter() - started)
    return seconds, len(dataset.frame)


def run_flow(services: stack.Stack, timings: Timings, imports: dict) -> dict[str, Any]:
    """Run the Prefect flow against its own server, its tasks' steps timed; return the figures."""
    from telescore.services.embedded import prefect_env, prefect_server
    from telescore.services.processes import free_port

    port = free_port()
    api = f"http://{stack.HOST}:{port}/api"
    # Prefect reads its settings when first imported: point it at this server before that.
    os.environ.update(prefect_env((services.dir / "prefect").resolve(), api))
    started = time.perf_counter()
    services.start(stack.Server("prefect", prefect_server(services.dir, port), api))
    server_start, started = time.perf_counter() - started, time.perf_counter()
    from pipelines import training as flows
    from prefect.logging.handlers import APILogHandler

    imports["Prefect + pipelines.training (flow only)"] = time.perf_counter() - started
    timings.steps = {}
    for name, label in STEPS.items():  # timed inside each task: what the task adds is the flow's
        task = getattr(flows.TASKS, name)
        task.fn = timings.step(label, task.fn)
    started = time.perf_counter()
    outcome = flows.train_telemarketing()
    figures = {"server_start": server_start, "wall": time.perf_counter() - started}
    APILogHandler().flush()  # the flow's logs reach its server before the server stops
    return figures | {"outcome": outcome, "tasks": {k: v["wall"] for k, v in timings.steps.items()}}


def print_report(report: Report, imports: dict, runs: list[dict], floor: list, flow: Any) -> dict:
    """Print imports, each run's steps side by side, floor, ratios, flow; return the chart."""
    imports_total, floor_median = sum(imports.values()), statistics.median(floor)
    rows = [*imports.items(), ("total", imports_total)]
    report.table("Imports, once per process (each on top of those above)", ["modules", "s"], rows)
    tasks, rows, bars = flow["tasks"] if flow else {}, [], {}
    for name in runs[0]["steps"]:
        steps, cores = [run["steps"][name] for run in runs], runs[-1]["steps"][name]["cores"]
        rows.append([name, *(f"{step['wall']:.2f} ({step['mlflow']:.2f})" for step in steps)])
        rows[-1] += [tasks.get(name), cores["client"], cores["mlflow"], cores["other"]]
        bars[name] = {f"run {n}": step["wall"] for n, step in enumerate(steps, start=1)}
        bars[name] |= {"Prefect task": tasks[name]} if name in tasks else {}
    rows.append(["  of which the scikit-learn fit", *(run["fit"] for run in runs)])
    totals = [f"{run['total']:.2f} ({sum(run['mlflow_calls'].values()):.2f})" for run in runs]
    rows.append(["total of the steps", *totals, sum(tasks.values()) if flow else None])
    rows.append(["total + imports", *(run["total"] + imports_total for run in runs)])
    report.table(
        "Steps, wall s (of which MLflow calls)",
        ["step", "run 1: new registry", "run 2: vs champion", "in its Prefect task (run 3)"]
        + ["run 2 cores: this", "MLflow", "other"],
        rows,
        "cores: CPU s per wall s during the step: this process, the MLflow server, the rest",
    )
    fits = ", ".join(f"{s:.2f}" for s in floor)
    report.line(f"\nFloor: build_pipeline(params.model).fit, median {floor_median:.2f} s ({fits})")
    bars["floor: bare fit"] = {"run 1": floor_median}
    bars |= {f"import {label.split(' (')[0]}": {"imports": s} for label, s in imports.items()}
    for number, run in enumerate(runs, start=1):
        calls = ", ".join(f"{k} {v:.2f}" for k, v in run["mlflow_calls"].items() if v >= 0.005)
        report.line(
            f"  run {number}: steps / floor {run['total'] / floor_median:.1f}x, (steps + imports) "
            f"/ floor {(run['total'] + imports_total) / floor_median:.1f}x; holdout ROC AUC "
            f"{run['roc_auc']:.4f}, version {run['version']}, promoted {run['promoted']}; "
            f"MLflow calls, s: {calls}"
        )
    if flow:
        outcome, overhead = flow["outcome"], flow["wall"] - sum(tasks.values())
        report.line(
            f"\nPrefect flow (run 3): flow call {flow['wall']:.2f} s = steps in its tasks "
            f"{sum(tasks.values()):.2f} s + orchestration and set-up {overhead:.2f} s; / floor "
            f"{flow['wall'] / floor_median:.1f}x; holdout ROC AUC {outcome['holdout_roc_auc']:.4f}"
            f", version {outcome['version']}, promoted {outcome['promoted']}"
        )
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-prefect", action="store_true", help="do not run the flow")
    args = parser.parse_args()
    report, imports = Report("training"), {}
    for label, modules in IMPORTS.items():
        started = time.perf_counter()
        for module in modules.split():
            importlib.import_module(module)
        imports[label] = time.perf_counter() - started
    from telescore.io.params_files import load_training_params

    params = load_training_params(stack.PROJECT_ROOT / "params.yaml")
    with stack.Stack("training") as services:
        started = time.perf_counter()
        services.mlflow()
        mlflow_start = report.data["mlflow_server_start"] = time.perf_counter() - started
        meter = harness.CpuMeter({"mlflow": harness.Party(services.servers["mlflow"].pid)})
        timings = Timings(services.context.registry, meter)
        runs = [timings.run(services.context, params) for _ in (1, 2)]  # 2 meets 1 as champion
        floor, rows = time_floor(params)
        flow = None if args.skip_prefect else run_flow(services, timings, imports)
    prefect = f", Prefect {flow['server_start']:.1f} s" if flow else ""
    report.line(
        f"\ntelescore training: {rows:,} rows, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        f"servers started in MLflow {mlflow_start:.1f} s{prefect} (not counted)"
    )
    report.data |= {"imports": imports, "runs": runs, "floor": floor, "prefect": flow}
    bars = print_report(report, imports, runs, floor, flow)
    report.save([Panel("seconds (wall)", bars)], "Training on all rows: steps, floor, imports")


if __name__ == "__main__":
    main()
