"""Time the training pipeline on all 41,188 rows, step by step, against a bare scikit-learn fit.

Run from the project root:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.training [--skip-prefect]

It starts its own MLflow server on a free port in a temporary folder (start-up reported, not
counted) and calls the `telescore.jobs.training` functions in-process twice: run 1 meets an
empty registry, run 2 a champion to beat. Library imports are timed apart from the steps, since
Great Expectations and Deepchecks each take seconds to import once per process.

Run 3 is the Prefect flow itself, called in-process against a Prefect server of its own: the
same server `telescore up` runs (rather than Prefect's ephemeral one), so its start-up is kept
out of the figures, and started only after runs 1-2 so that its background loops do not slow
them. Its orchestration overhead is the flow's wall time less its tasks' recorded times.

Figures are printed, written to benchmarks/results/training.json (gitignored) and drawn in
benchmarks/results/training.png. Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

# Before numpy loads: the 2 cores are shared with the MLflow server, as in the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
PARAMS_FILE = PROJECT_ROOT / "params.yaml"
FLOOR_REPEATS = 3

# Imported in this order, each timed on top of the ones before (shared dependencies count once).
IMPORTS: dict[str, tuple[str, ...]] = {
    "pandas, scikit-learn, matplotlib, MLflow (jobs.training)": ("telescore.jobs.training",),
    "Great Expectations": (
        "great_expectations",
        "great_expectations.render.renderer",
        "great_expectations.render.view",
    ),
    "Deepchecks": ("deepchecks.tabular", "deepchecks.tabular.checks", "deepchecks.core"),
}
# Every Registry method that talks to MLflow; none of them calls another, so none counts twice.
REGISTRY_CALLS = (
    "start_run",
    "end_run",
    "log",
    "log_model",
    "register",
    "alias_version",
    "set_alias",
    "load_model",
)

# The Prefect task that wraps each step (the flow opens and closes the MLflow run itself).
STEP_TASKS = {
    "ingest": "ingest",
    "GX validation": "validate-data",
    "train": "train",
    "Deepchecks": "validate-model",
    "MLflow log + register": "register",
}

T = TypeVar("T")


class Clock:
    """Wall times of named blocks, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Time the block as `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def time_imports() -> dict[str, float]:
    """Import the heavy libraries once, timing each group on top of the ones before."""
    clock = Clock()
    for label, modules in IMPORTS.items():
        with clock.time(label):
            for module in modules:
                importlib.import_module(module)
    return clock.seconds


def timed_registry_class() -> type[Any]:
    """Return a Registry subclass that adds up the seconds spent in each MLflow call."""
    from telescore.io.registry import Registry

    class TimedRegistry(Registry):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mlflow_calls: dict[str, float] = dict.fromkeys(REGISTRY_CALLS, 0.0)

        @property
        def mlflow_seconds(self) -> float:
            return sum(self.mlflow_calls.values())

    def timed(name: str) -> Callable[..., Any]:
        method = getattr(Registry, name)

        @functools.wraps(method)
        def wrapper(self: TimedRegistry, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.mlflow_calls[name] += time.perf_counter() - started

        return wrapper

    for name in REGISTRY_CALLS:
        setattr(TimedRegistry, name, timed(name))
    return TimedRegistry


def time_floor(params: Any, dataset: Any) -> list[float]:
    """Fit the bare pipeline on the same training rows a few times; return each fit's seconds."""
    from telescore.core.features import build_pipeline, split_features_label
    from telescore.core.splits import chronological_split

    train_rows, _ = chronological_split(dataset.frame, params.split)
    features, labels = split_features_label(train_rows)
    seconds = []
    for _ in range(FLOOR_REPEATS):
        pipeline = build_pipeline(params.model)
        started = time.perf_counter()
        pipeline.fit(features, labels)
        seconds.append(time.perf_counter() - started)
    return seconds


def run_jobs(params: Any, tracking_uri: str, work: Path) -> dict[str, Any]:
    """Run the five jobs in-process, as the flow's tasks do; return wall and MLflow seconds."""
    from telescore.jobs import training
    from telescore.settings import load_settings

    settings = load_settings()
    registry = timed_registry_class()(
        tracking_uri, settings.mlflow.model_name, settings.mlflow.experiment
    )
    steps: dict[str, dict[str, float]] = {}

    def step(name: str, call: Callable[[], T]) -> T:
        mlflow_before = registry.mlflow_seconds
        started = time.perf_counter()
        result = call()
        wall = time.perf_counter() - started
        steps[name] = {"wall": wall, "mlflow": registry.mlflow_seconds - mlflow_before}
        return result

    started = time.perf_counter()
    run_id = step("start run", lambda: registry.start_run("benchmark"))
    dataset = step("ingest", lambda: training.ingest(params, PROJECT_ROOT))
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
            trained, dataset, data_report, model_report, params, registry, run_id, PROJECT_ROOT
        ),
    )
    step("end run", lambda: registry.end_run(run_id, succeeded=True))
    total = time.perf_counter() - started
    return {
        "steps": steps,
        "total": total,
        "mlflow_total": registry.mlflow_seconds,
        "mlflow_calls": registry.mlflow_calls,
        "fit_in_train": trained.fit_seconds,
        "holdout_roc_auc": result.metrics["holdout_roc_auc"],
        "version": result.version.version if result.version else None,
        "promoted": result.promoted,
        "dataset": dataset,
    }


def run_flow(tracking_uri: str, state_dir: Path) -> dict[str, Any]:
    """Run the Prefect flow against its own server; return its wall time and its tasks' times."""
    from telescore.services.embedded import prefect_env, prefect_server
    from telescore.services.processes import free_port

    port = free_port()
    server = prefect_server(state_dir, port)
    # Prefect reads its settings when first imported: point it at this server before that.
    os.environ.update(
        prefect_env((state_dir / "prefect").resolve(), f"http://127.0.0.1:{port}/api")
    )
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    started = time.perf_counter()
    server.start()
    server_start = time.perf_counter() - started
    try:
        clock = Clock()
        with clock.time("import"):
            from pipelines.training import train_telemarketing
            from prefect import get_client
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        with clock.time("flow"):
            state = train_telemarketing(return_state=True)
        outcome = state.result()
        flow_run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
    finally:
        server.stop()
    tasks = {
        run.name.rsplit("-", 1)[0]: (run.end_time - run.start_time).total_seconds()
        for run in sorted(task_runs, key=lambda run: run.start_time)
        if run.start_time and run.end_time
    }
    flow_run_seconds = (flow_run.end_time - flow_run.start_time).total_seconds()
    return {
        "server_start": server_start,
        "import": clock.seconds["import"],
        "wall": clock.seconds["flow"],
        "flow_run": flow_run_seconds,
        "tasks": tasks,
        "holdout_roc_auc": outcome["holdout_roc_auc"],
        "version": outcome["version"],
        "promoted": outcome["promoted"],
    }


def _cell(step: dict[str, float] | None) -> str:
    """Format one step's wall seconds with its MLflow share in brackets."""
    if step is None:
        return f"{'-':>16}"
    return f"{step['wall']:7.2f} ({step['mlflow']:5.2f})"


def print_report(results: dict[str, Any]) -> None:
    """Print imports, the steps of every run side by side, the floor, ratios and flow overhead."""
    runs, floor, flow = results["runs"], results["floor"], results["prefect"]
    imports_total = sum(results["imports"].values())
    print(f"\ntelescore training benchmark: {results['rows']:,} rows, {results['machine']}")
    not_counted = f"MLflow server {results['mlflow_server_start']:.1f} s"
    if flow:
        not_counted += f", Prefect server {flow['server_start']:.1f} s"
    print(f"Server start-up, not counted: {not_counted}\n")

    print("Imports, once per process (each on top of those above)     seconds")
    for label, seconds in results["imports"].items():
        print(f"  {label:58}{seconds:7.2f}")
    print(f"  {'total':58}{imports_total:7.2f}\n")

    headers = ["run 1: new registry", "run 2: vs champion"]
    print(
        f"{'Steps, wall s (of which MLflow calls)':38}"
        + "".join(f"{h:>21}" for h in headers)
        + (f"{'Prefect task (run 3)':>22}" if flow else "")
    )
    for name in runs[0]["steps"]:
        task = flow["tasks"].get(STEP_TASKS.get(name, "")) if flow else None
        print(
            f"  {name:36}"
            + "".join(f"{_cell(run['steps'][name]):>21}" for run in runs)
            + (f"{task:22.2f}" if task is not None else f"{'(in flow)':>22}" if flow else "")
        )
    print(
        f"  {'  of which the scikit-learn fit':36}"
        + "".join(f"{run['fit_in_train']:14.2f}{'':7}" for run in runs)
    )
    totals = [{"wall": run["total"], "mlflow": run["mlflow_total"]} for run in runs]
    print(
        f"  {'total of the steps':36}"
        + "".join(f"{_cell(t):>21}" for t in totals)
        + (f"{sum(flow['tasks'].values()):22.2f}" if flow else "")
    )
    print(
        f"  {'total + imports':36}"
        + "".join(f"{run['total'] + imports_total:14.2f}{'':7}" for run in runs)
    )
    for index, run in enumerate(runs, start=1):
        calls = ", ".join(f"{k} {v:.2f}" for k, v in run["mlflow_calls"].items() if v >= 0.005)
        print(f"  MLflow calls, run {index}: {calls}")

    print(
        f"\nFloor: build_pipeline(params.model).fit, median of {FLOOR_REPEATS}: "
        f"{floor['median']:.2f} s ({', '.join(f'{s:.2f}' for s in floor['runs'])})"
    )
    for index, run in enumerate(runs, start=1):
        print(
            f"  run {index}: steps / floor {run['total'] / floor['median']:5.1f}x, "
            f"(steps + imports) / floor {(run['total'] + imports_total) / floor['median']:5.1f}x"
            f"; holdout ROC AUC {run['holdout_roc_auc']:.4f}, version {run['version']}, "
            f"promoted {run['promoted']}"
        )
    if not flow:
        return
    tasks_total = sum(flow["tasks"].values())
    print("\nPrefect flow train-telemarketing (run 3), same process, after the runs above:")
    print(f"  import prefect + pipelines.training {flow['import']:.2f} s (not in the flow time)")
    print(
        f"  flow call {flow['wall']:.2f} s = tasks {tasks_total:.2f} s + orchestration and "
        f"in-flow set-up {flow['wall'] - tasks_total:.2f} s "
        f"(server-recorded flow run {flow['flow_run']:.2f} s)"
    )
    print(
        f"  flow call / floor {flow['wall'] / floor['median']:.1f}x; holdout ROC AUC "
        f"{flow['holdout_roc_auc']:.4f}, version {flow['version']}, promoted {flow['promoted']}"
    )


def save_chart(results: dict[str, Any], path: Path) -> None:
    """Draw imports, and each step per run split into MLflow calls and other work."""
    import matplotlib

    matplotlib.use("Agg")  # Files only: benchmarks run headless.
    import matplotlib.pyplot as plt

    runs, flow, floor = results["runs"], results["prefect"], results["floor"]["median"]
    names = list(runs[0]["steps"])
    series: list[tuple[str, list[float], list[float]]] = [
        (
            f"run {index}",
            [run["steps"][name]["wall"] - run["steps"][name]["mlflow"] for name in names],
            [run["steps"][name]["mlflow"] for name in names],
        )
        for index, run in enumerate(runs, start=1)
    ]
    if flow:
        tasks = [flow["tasks"].get(STEP_TASKS.get(name, ""), 0.0) for name in names]
        series.append(("Prefect task (run 3)", tasks, [0.0] * len(names)))
    height = 0.8 / len(series)
    figure, (imports_axes, steps_axes) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 2]}
    )

    labels = list(results["imports"])
    imports_axes.barh(range(len(labels)), list(results["imports"].values()), color="#999999")
    imports_axes.set_yticks(range(len(labels)), [label.split(" (")[0] for label in labels])
    imports_axes.invert_yaxis()
    imports_axes.set(xlabel="seconds", title="Imports, once per process")

    colours = ["#4c72b0", "#55a868", "#8172b2"]
    for offset, ((label, work, mlflow), colour) in enumerate(zip(series, colours, strict=False)):
        positions = [row + offset * height for row in range(len(names))]
        steps_axes.barh(positions, work, height, color=colour, label=label)
        if any(mlflow):
            steps_axes.barh(
                positions,
                mlflow,
                height,
                left=work,
                color=colour,
                alpha=0.45,
                hatch="//",
                label=f"{label}: MLflow calls",
            )
    steps_axes.barh([len(names)], [floor], 0.8 / 3, color="#222222", label="bare fit (floor)")
    steps_axes.set_yticks(
        [row + 0.4 - height / 2 for row in range(len(names))] + [len(names)],
        [*names, "floor: bare fit"],
    )
    steps_axes.invert_yaxis()
    steps_axes.set(
        xlabel="seconds (wall)",
        title=f"Steps on {results['rows']:,} rows\n"
        + ", ".join(
            f"run {i} {run['total']:.1f} s ({run['total'] / floor:.0f}x the fit)"
            for i, run in enumerate(runs, start=1)
        ),
    )
    # Below the axes: inside, it would hide the longest bars.
    steps_axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small", frameon=False
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    """Measure, print, and write the JSON figures and the PNG chart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-prefect", action="store_true", help="Do not run the flow.")
    args = parser.parse_args()

    # Shared machines vary: the load average before and after says how quiet the run was.
    load_before = os.getloadavg()[0]
    imports = time_imports()
    from telescore.core.params import load_params
    from telescore.services.embedded import mlflow_server
    from telescore.services.processes import free_port

    params = load_params(PARAMS_FILE)
    with tempfile.TemporaryDirectory(prefix="telescore-bench-") as temp:
        state_dir = Path(temp)
        port = free_port()
        server = mlflow_server(state_dir, port)
        started = time.perf_counter()
        with server.running():
            server_start = time.perf_counter() - started
            tracking_uri = f"http://127.0.0.1:{port}"
            # Run 1 meets an empty registry; run 2 scores the champion run 1 left behind.
            runs = [run_jobs(params, tracking_uri, state_dir / f"run{n}") for n in (1, 2)]
            dataset = runs[0]["dataset"]
            floor_runs = time_floor(params, dataset)
            flow = None
            if not args.skip_prefect:
                flow = run_flow(tracking_uri, state_dir)
                imports["Prefect + pipelines.training (flow only)"] = flow["import"]

    for run in runs:
        del run["dataset"]
    results = {
        "rows": len(dataset.frame),
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        "mlflow_server_start": server_start,
        "imports": imports,
        "runs": runs,
        "floor": {"runs": floor_runs, "median": statistics.median(floor_runs)},
        "prefect": flow,
    }
    print_report(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "training.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    save_chart(results, RESULTS_DIR / "training.png")
    print(f"\nWrote {RESULTS_DIR / 'training.json'} and {RESULTS_DIR / 'training.png'}")


if __name__ == "__main__":
    sys.exit(main())
