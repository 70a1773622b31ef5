"""`telescore backtest`: choose a configuration of the loop on a labelled history, honestly.

Every candidate of a grid file (overrides of params.yaml) is played over the history on every
stream variant (window size, label delay, first champion's share) by `core.backtest`, with
no service. The history is the dataset, or a deployment's own logged predictions joined to
their outcomes in MongoDB. `core.backtest_selection` then ranks the candidates on the earlier
folds and reports the first on the last fold, which played no part in choosing it. The job
writes a table (CSV, Markdown), every training run of every loop (CSV), a plot and the
recommended params patch into a folder, and, when MLflow answers, logs them in a parent run
with one child run per candidate.

Variants are played in worker processes (`workers`), each keeping its own fits: candidates
that share a model share them within a variant.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from telescore.core.backtest import History, LoopConfig, StreamVariant, run_loop
from telescore.core.backtest_grid import flat_keys, params_patch
from telescore.core.backtest_selection import (
    METRICS,
    CandidateEvidence,
    PeriodSpread,
    RunSummary,
    Selection,
    fold_edges,
    select,
    spread,
    summarise,
)
from telescore.core.schema import FEATURES, TARGET
from telescore.io.datasets import CsvSource, fingerprint_rows
from telescore.io.params_files import BacktestPlan, load_backtest_plan, write_params_patch

if TYPE_CHECKING:
    from telescore.io.context import Context
    from telescore.io.registry import Registry

Source = Literal["dataset", "mongodb"]
Progress = Callable[[str, int, int], None]
PERIODS = ("choose", "report", "stream")
MONGODB_READ_TIMEOUT_MS = 600_000
"""A deployment's whole history is one long read on nx-27017 (a minute per million rows)."""


@dataclass(frozen=True)
class BacktestConfig:
    """What to backtest, on which history, and where the evidence goes."""

    grid: Path
    """The grid file: candidates, stream variants, selection."""
    params: Path
    """The params file the candidates override (the patch is against it)."""
    source: Source = "dataset"
    """dataset: the params' `training.data.path`; mongodb: logged predictions with outcomes."""
    rows: int | None = None
    """Only the first N rows of the history (a quick look)."""
    workers: int = 2
    """Processes playing the variants (1: in this process)."""
    out: Path = Path("reports/backtest")
    """Folder of the table, the training runs, the plot and the patch."""
    mlflow: bool = True
    """Log to MLflow when it answers (False: do not try)."""
    patch: Path | None = None
    """Also write the recommended params patch there."""


@dataclass
class BacktestResult:
    """What a backtest played, found and wrote."""

    source: str
    history_rows: int
    fingerprint: str
    candidates: tuple[str, ...]
    variants: list[StreamVariant]
    summaries: list[RunSummary]
    selection: Selection
    patch: dict[str, Any]
    """The recommended candidate's changes to the params file (empty: the file is it)."""
    seconds: float
    fits: int
    files: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    """The parent run in MLflow; None when nothing was logged."""
    mlflow_run: str | None = None
    """Where MLflow's UI shows it."""
    mlflow_note: str = ""
    """Why nothing was logged, when nothing was."""

    def fold_rows(self, fold: int) -> tuple[int, int]:
        """Return the history rows [start, end) of a fold, from 0 (the first reaches back)."""
        edges = self.selection.edges
        return (0 if fold == 0 else edges[fold], edges[fold + 1])


def load_history(
    ctx: Context, source: Source, plan: BacktestPlan, root: Path, rows: int | None
) -> tuple[pd.DataFrame, str]:
    """Return the labelled history in time order (model inputs and label) and its description."""
    if source == "dataset":
        data = plan.base.training.data
        frame = CsvSource(root / data.path, None, data.drop_columns).load().frame
        described = f"{data.path}"
    else:
        from telescore.io.outcome_store import OutcomeStore

        store = ctx.store(OutcomeStore, read_timeout_ms=MONGODB_READ_TIMEOUT_MS)
        # Every logged prediction with an outcome, in time order (ids sort as time does).
        frame = store.labelled_between(
            datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
        )
        described = f"MongoDB {ctx.mongodb_database}: logged predictions with outcomes"
    frame = frame.loc[:, [*FEATURES, TARGET]]
    if rows is not None:
        frame = frame.iloc[:rows]
    if len(frame) < 2:
        raise ValueError(f"{described}: {len(frame)} labelled rows, nothing to backtest")
    return frame.reset_index(drop=True), described


# -- playing the loops, in worker processes -------------------------------------------------------

_WORKER_HISTORY: History | None = None
"""A worker process's history, built once when the worker starts."""


def _start_worker(frame: pd.DataFrame) -> None:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    global _WORKER_HISTORY  # noqa: PLW0603 - one history per worker process, built once
    threadpool_limits(limits=1)  # the workers share the cores: one thread each
    _WORKER_HISTORY = History(frame)


def play_variant(
    configs: Sequence[LoopConfig],
    variant: StreamVariant,
    edges: Sequence[int],
    history: History | None = None,
) -> tuple[list[RunSummary], int]:
    """Play every candidate on one stream variant; return their summaries and the fits made."""
    played = history or _WORKER_HISTORY
    if played is None:
        raise RuntimeError("no history: pass one, or call from a started worker")
    fits = played.fits
    try:
        summaries = [summarise(run_loop(played, config, variant), edges) for config in configs]
    finally:
        played.forget()  # the next variant shares no fit with this one
    return summaries, played.fits - fits


def _start_method() -> str:
    """Return how to start the workers: fork where there is one, else spawn.

    A spawned worker imports the command's whole `__main__` again (the CLI: MLflow, Prefect,
    ...; 10-30 s on two busy cores); a forked one has every module already. The fork happens
    before this process fits a model or opens a client, and a worker touches neither the
    parent's clients nor its locks: it plays loops and returns figures.
    """
    return "fork" if "fork" in get_all_start_methods() else "spawn"


def play(
    frame: pd.DataFrame,
    configs: Sequence[LoopConfig],
    variants: Sequence[StreamVariant],
    edges: Sequence[int],
    workers: int,
    progress: Progress,
) -> tuple[list[RunSummary], int]:
    """Play every candidate on every variant; return the summaries (variant order) and fits."""
    total = len(variants)
    found: dict[StreamVariant, list[RunSummary]] = {}
    fits = 0
    progress(f"playing {len(configs)} candidates on {total} stream variants", 0, total)
    if workers <= 1 or total == 1:
        history = History(frame)
        for done, variant in enumerate(variants, start=1):
            found[variant], made = play_variant(configs, variant, edges, history)
            fits += made
            progress(f"played {variant.label}", done, total)
    else:
        with ProcessPoolExecutor(
            max_workers=min(workers, total),
            mp_context=get_context(_start_method()),
            initializer=_start_worker,
            initargs=(frame,),
        ) as pool:
            futures = {
                pool.submit(play_variant, configs, variant, edges): variant for variant in variants
            }
            for done, future in enumerate(as_completed(futures), start=1):
                variant = futures[future]
                found[variant], made = future.result()
                fits += made
                progress(f"played {variant.label}", done, total)
    return [summary for variant in variants for summary in found[variant]], fits


# -- the job --------------------------------------------------------------------------------------


def run_backtest(
    ctx: Context, config: BacktestConfig, root: Path, progress: Progress = lambda *_: None
) -> BacktestResult:
    """Backtest the grid's candidates on the history; write and log the evidence; recommend."""
    started = time.monotonic()
    plan = load_backtest_plan(config.grid, config.params)
    progress("reading the history", 0, 1)
    frame, described = load_history(ctx, config.source, plan, root, config.rows)
    variants = plan.grid.variants.streams()
    rule = plan.grid.selection
    edges = fold_edges(
        len(frame), [variant.first_rows(len(frame)) for variant in variants], rule.folds
    )
    summaries, fits = play(frame, plan.candidates, variants, edges, config.workers, progress)
    names = tuple(each.name for each in plan.candidates)
    ineligible = frozenset(
        each.name
        for each in plan.candidates
        if rule.release_modes is not None and each.training.release.mode not in rule.release_modes
    )
    selection = select(summaries, names, edges, rule, ineligible)
    recommended = next(each for each in plan.candidates if each.name == selection.recommended)
    result = BacktestResult(
        source=described,
        history_rows=len(frame),
        fingerprint=fingerprint_rows(frame),
        candidates=names,
        variants=variants,
        summaries=summaries,
        selection=selection,
        patch=params_patch(plan.base, recommended),
        seconds=0.0,
        fits=fits,
    )
    progress("writing the table, the plot and the patch", 0, 1)
    result.files = write_evidence(result, plan, config)
    result.seconds = time.monotonic() - started
    if config.mlflow:
        registry = ctx.registry
        if registry.answers():
            progress("logging to MLflow", 0, 1)
            result.mlflow_run_id = log_to_mlflow(registry, result, plan, config)
            result.mlflow_run = registry.run_url(result.mlflow_run_id)
            result.seconds = time.monotonic() - started
        else:
            result.mlflow_note = (
                f"MLflow at {registry.tracking_uri} does not answer: nothing logged there "
                "(start it with `telescore up`, or pass --no-mlflow)"
            )
    else:
        result.mlflow_note = "--no-mlflow: nothing logged to MLflow"
    return result


def patch_header(result: BacktestResult) -> str:
    """Return the comment at the top of a params patch: what chose it, on what evidence."""
    evidence = result.selection.evidence[result.selection.recommended]
    report = evidence.report
    first, end = result.fold_rows(result.selection.rule.folds - 1)
    return (
        f"telescore backtest: the recommended candidate `{result.selection.recommended}`.\n"
        f"Chosen on history rows before {first:,} of {result.history_rows:,} ({result.source}); "
        f"on rows {first:,}-{end:,}, which did not choose it, median (worst) over "
        f"{report.variants} stream variants:\n"
        f"pooled ROC AUC {figure_pair(report, 'pooled_roc_auc', 3)}, calibration gap "
        f"{figure_pair(report, 'calibration_gap', 3)}, top-decile lift "
        f"{figure_pair(report, 'top_decile_lift', 2)}, training runs per 10,000 calls "
        f"{figure_pair(report, 'runs_per_10k_calls', 1)}.\n"
        "Merge these fields into params.yaml (only they change)."
    )


def figure_pair(figures: PeriodSpread, metric: str, digits: int) -> str:
    """Return a figure as "median (worst)" over the variants."""
    spread = figures.of(metric)  # type: ignore[arg-type]
    return f"{spread.median:.{digits}f} ({spread.worst:.{digits}f})"


def fold_spreads(result: BacktestResult) -> dict[str, list[PeriodSpread]]:
    """Return each candidate's figures fold by fold, over the variants."""
    folds = result.selection.rule.folds
    return {
        name: [
            spread(
                [each.periods[(k, k + 1)] for each in result.summaries if each.candidate == name]
            )
            for k in range(folds)
        ]
        for name in result.candidates
    }


def write_evidence(
    result: BacktestResult, plan: BacktestPlan, config: BacktestConfig
) -> dict[str, Path]:
    """Write the table (CSV, Markdown), the training runs, the plot and the patch."""
    from telescore.jobs.plots import save_backtest_plot

    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "table": _write_table(result, out / "backtest.csv"),
        "runs": _write_runs(result, out / "training_runs.csv"),
        "summary": _write_markdown(result, out / "backtest.md"),
        "plot": save_backtest_plot(
            fold_spreads(result), result.selection.recommended, out / "backtest.png"
        ),
        "patch": write_params_patch(
            out / "recommended.patch.yaml", result.patch, patch_header(result)
        ),
    }
    if config.patch is not None:
        files["patch, as asked"] = write_params_patch(
            config.patch, result.patch, patch_header(result)
        )
    return files


def _write_table(result: BacktestResult, path: Path) -> Path:
    """One row per candidate, variant and period (choose, report, stream, each fold)."""
    folds = result.selection.rule.folds
    periods = {
        "choose": (0, folds - 1),
        "report": (folds - 1, folds),
        "stream": (0, folds),
        **{f"fold {k + 1}": (k, k + 1) for k in range(folds)},
    }
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "candidate",
                "window_rows",
                "label_delay_rows",
                "first_champion_fraction",
                "period",
                "rows",
                "windows",
                *METRICS,
                "training_runs",
                "first_champion",
            ]
        )
        for each in result.summaries:
            variant = each.variant
            named = [
                *periods.items(),
                *([("first champion never retrained", None)] if each.baseline else []),
            ]
            for period, folds_span in named:
                figures = each.periods[folds_span] if folds_span else each.baseline
                assert figures is not None  # noqa: S101 - a baseline row only with a baseline
                writer.writerow(
                    [
                        each.candidate,
                        variant.window_rows,
                        variant.label_delay_rows,
                        variant.first_champion_fraction,
                        period,
                        figures.rows,
                        figures.windows,
                        *(f"{figures.value(metric):.6f}" for metric in METRICS),
                        figures.training_runs,
                        each.first_champion,
                    ]
                )
    return path


def _write_runs(result: BacktestResult, path: Path) -> Path:
    """Every training run and shadow release of every loop, in order."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["candidate", "variant", "after_window", "event", "outcome", "detail"])
        for each in result.summaries:
            for run in each.runs:
                writer.writerow(
                    [
                        each.candidate,
                        each.variant.label,
                        run.after_window,
                        "training run",
                        run.outcome,
                        f"{run.reason} -> {run.detail}",
                    ]
                )
            for release in each.releases:
                writer.writerow(
                    [
                        each.candidate,
                        each.variant.label,
                        release.decided_after_window,
                        f"shadow release from window {release.registered_after_window + 1}",
                        release.action,
                        release.reason,
                    ]
                )
    return path


def summary_rows(result: BacktestResult) -> list[tuple[str, str, str, str, str, str]]:
    """Return the summary table's rows: per candidate (ranked), its choose and report periods.

    Each cell is "median (worst)" over the variants.
    """
    rows = []
    for rank, name in enumerate(result.selection.ranking, start=1):
        evidence = result.selection.evidence[name]
        for period, figures in (("choose", evidence.choose), ("report", evidence.report)):
            rows.append(
                (
                    f"{rank}. {name}" if period == "choose" else "",
                    period,
                    figure_pair(figures, "pooled_roc_auc", 3),
                    figure_pair(figures, "calibration_gap", 3),
                    figure_pair(figures, "top_decile_lift", 2),
                    figure_pair(figures, "runs_per_10k_calls", 1),
                )
            )
    return rows


METRIC_NAMES = {
    "pooled_roc_auc": "pooled ROC AUC",
    "calibration_gap": "calibration gap",
    "top_decile_lift": "top-decile lift",
    "runs_per_10k_calls": "training runs per 10,000 calls",
}
SUMMARY_COLUMNS = (
    "candidate",
    "period",
    "pooled ROC AUC",
    "calibration gap",
    "top-decile lift",
    "runs / 10k calls",
)


def _write_markdown(result: BacktestResult, path: Path) -> Path:
    lines = [
        f"# Backtest of {len(result.candidates)} candidates on {len(result.variants)} stream "
        f"variants of {result.history_rows:,} rows ({result.source})",
        "",
        "Median (worst) over the variants; ranked on the choose period, "
        f"recommended: `{result.selection.recommended}`.",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
        *("| " + " | ".join(row) + " |" for row in summary_rows(result)),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# -- MLflow ---------------------------------------------------------------------------------------


def log_to_mlflow(
    registry: Registry, result: BacktestResult, plan: BacktestPlan, config: BacktestConfig
) -> str:
    """Log the backtest to MLflow; return the parent run's id.

    The parent holds the grid, the history, the recommendation and the files; one child per
    candidate holds its changes to the params file (as params) and its figures (as metrics).
    """
    experiment = f"{registry.experiment}-backtest"
    selection = result.selection
    parent = registry.start_run(
        "backtest",
        tags={"backtest.recommended": selection.recommended, "backtest.source": result.source},
        experiment=experiment,
    )
    succeeded = False
    try:
        rule = selection.rule
        registry.log(
            parent,
            params={
                "grid": config.grid.name,
                "grid_sha256": hashlib.sha256(config.grid.read_bytes()).hexdigest(),
                "params_file": config.params.name,
                "source": result.source,
                "history_rows": result.history_rows,
                "history_fingerprint": result.fingerprint,
                "candidates": len(result.candidates),
                "variants": len(result.variants),
                "window_rows": sorted({each.window_rows for each in result.variants}),
                "label_delay_rows": sorted({each.label_delay_rows for each in result.variants}),
                "first_champion_fraction": sorted(
                    {each.first_champion_fraction for each in result.variants}
                ),
                "folds": rule.folds,
                "fold_edges": list(selection.edges),
                "selection.metric": rule.metric,
                "selection.statistic": rule.statistic,
                "selection.max_calibration_gap": rule.max_calibration_gap,
                "selection.max_runs_per_10k_calls": rule.max_runs_per_10k_calls,
                "recommended": selection.recommended,
            },
            metrics={
                **_metrics(selection.evidence[selection.recommended]),
                "seconds": result.seconds,
                "fits": float(result.fits),
            },
            artifacts=[
                ("backtest", path)
                for name, path in [*result.files.items(), ("grid", config.grid)]
                if name != "patch, as asked"  # a copy of recommended.patch.yaml
            ],
        )
        for config_of in plan.candidates:
            evidence = selection.evidence[config_of.name]
            child = registry.start_run(
                config_of.name,
                tags={
                    "backtest.candidate": config_of.name,
                    "backtest.recommended": str(config_of.name == selection.recommended).lower(),
                    "backtest.rank": str(selection.ranking.index(config_of.name) + 1),
                    "backtest.within_limits": str(evidence.within_limits).lower(),
                },
                parent_run_id=parent,
                experiment=experiment,
            )
            changes = flat_keys(params_patch(plan.base, config_of))
            registry.log(
                child,
                params=changes or {"changes": "none: the params file"},
                metrics=_metrics(evidence),
            )
            registry.end_run(child, True)
        succeeded = True
    finally:
        registry.end_run(parent, succeeded)
    return parent


def _metrics(evidence: CandidateEvidence) -> dict[str, float]:
    """Return a candidate's figures as MLflow metrics: `<period>_<figure>_<median|worst>`."""
    metrics: dict[str, float] = {}
    for period in (*PERIODS, "baseline"):
        figures: PeriodSpread | None = getattr(evidence, period)
        if figures is None:
            continue
        for metric in METRICS:
            spread_of = figures.of(metric)
            metrics[f"{period}_{metric}_median"] = spread_of.median
            metrics[f"{period}_{metric}_worst"] = spread_of.worst
    metrics["first_champion_refused"] = float(evidence.first_champion_refused)
    metrics["unserved_windows"] = float(evidence.unserved_windows)
    return metrics
