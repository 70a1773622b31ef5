"""Plots: a training run's ROC, precision-recall and calibration; a replay's and a backtest's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and workers.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from telescore.core.metrics import calibration_table  # noqa: E402
from telescore.core.prequential import StreamQuality  # noqa: E402

if TYPE_CHECKING:
    from telescore.core.backtest_selection import PeriodSpread


def save_evaluation_plots(labels: np.ndarray, scores: np.ndarray, out_dir: Path) -> list[Path]:
    """Write roc.png, precision_recall.png and calibration.png; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    figure, axes = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(labels, scores)
    axes.plot(fpr, tpr, label="model")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    axes.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC, holdout period")
    axes.legend()
    paths.append(_save(figure, out_dir / "roc.png"))

    figure, axes = plt.subplots(figsize=(5, 5))
    precision, recall, _ = precision_recall_curve(labels, scores)
    axes.plot(recall, precision, label="model")
    axes.axhline(float(np.mean(labels)), linestyle="--", color="grey", label="positive rate")
    axes.set(xlabel="Recall", ylabel="Precision", title="Precision-recall, holdout period")
    axes.legend()
    paths.append(_save(figure, out_dir / "precision_recall.png"))

    figure, axes = plt.subplots(figsize=(5, 5))
    table = calibration_table(labels, scores)
    axes.plot([row[0] for row in table], [row[1] for row in table], marker="o", label="model")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.set(xlabel="Mean score (decile)", ylabel="Actual subscription rate", title="Calibration")
    axes.legend()
    paths.append(_save(figure, out_dir / "calibration.png"))
    return paths


def save_replay_plot(
    loop: StreamQuality,
    never_retrained: StreamQuality,
    retrains: list[dict[str, Any]],
    path: Path,
) -> Path:
    """Plot window by window: ROC AUC, calibration and lift, loop against never retrained."""
    figure, (auc_axes, calibration_axes, lift_axes) = plt.subplots(
        3, 1, figsize=(10, 9), sharex=True
    )
    index = [w.window for w in loop.windows]
    for quality, label, style in (
        (
            never_retrained,
            f"first champion, never retrained (pooled AUC {never_retrained.pooled_roc_auc:.2f})",
            "--",
        ),
        (loop, f"telescore loop (pooled AUC {loop.pooled_roc_auc:.2f})", "-"),
    ):
        auc_axes.plot(index, [w.roc_auc for w in quality.windows], style, marker="o", label=label)
        calibration_axes.plot(
            index,
            [w.mean_score for w in quality.windows],
            style,
            marker=".",
            label=f"mean score, {label.split(' (')[0]}",
        )
        lift_axes.plot(index, [w.top_decile_lift for w in quality.windows], style, marker="o")
    calibration_axes.plot(
        index,
        [w.positive_rate for w in loop.windows],
        color="black",
        marker="s",
        label="observed positive rate",
    )
    auc_axes.axhline(0.5, color="grey", linestyle=":")
    lift_axes.axhline(1.0, color="grey", linestyle=":")
    for retrain in retrains:
        # A retrain after window w serves from window w + 1.
        where = retrain["window"] + 0.5
        colour = "green" if retrain["promoted"] else "red"
        for axes in (auc_axes, calibration_axes, lift_axes):
            axes.axvline(where, color=colour, alpha=0.4)
        auc_axes.annotate(
            f"v{retrain['version'] or '-'}",
            (where, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=7,
        )
    auc_axes.set(
        ylabel="ROC AUC", title="Prequential quality: each window scored before any model learnt it"
    )
    calibration_axes.set(ylabel="rate")
    lift_axes.set(
        ylabel="top-decile lift",
        xlabel="window (green: retrained and promoted, red: champion kept)",
    )
    auc_axes.legend(fontsize=8)
    calibration_axes.legend(fontsize=8)
    return _save(figure, path)


def save_backtest_plot(
    folds: Mapping[str, Sequence[PeriodSpread]], recommended: str, path: Path
) -> Path:
    """Plot each candidate's median figures fold by fold; the last fold is the report period."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 5))
    panels = (
        ("pooled_roc_auc", "pooled ROC AUC"),
        ("calibration_gap", "calibration gap (mean |score - rate|)"),
        ("top_decile_lift", "top-decile lift"),
    )
    count = len(next(iter(folds.values())))
    index = list(range(1, count + 1))
    for panel, (metric, title) in zip(axes, panels, strict=True):
        panel.axvspan(count - 0.5, count + 0.5, color="grey", alpha=0.15, label="report period")
        for name, spreads in folds.items():
            chosen = name == recommended
            panel.plot(
                index,
                [each.of(metric).median for each in spreads],  # type: ignore[arg-type]
                marker="o",
                linewidth=2.5 if chosen else 1.0,
                alpha=1.0 if chosen else 0.6,
                label=f"{name} (recommended)" if chosen else name,
            )
        panel.set(title=title, xlabel="fold (time order)", xticks=index)
    axes[0].set_ylabel("median over the stream variants")
    axes[0].legend(fontsize=7)
    figure.suptitle("Backtest: chosen on the first folds, reported on the last")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
