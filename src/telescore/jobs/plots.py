"""Plots: a training run's ROC, precision-recall and calibration; a replay's quality over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and workers.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from telescore.core.metrics import calibration_table  # noqa: E402
from telescore.core.prequential import StreamQuality  # noqa: E402


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


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
