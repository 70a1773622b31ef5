"""Evaluation plots logged with each training run: ROC, precision-recall and calibration."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and workers.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from telescore.core.metrics import calibration_table  # noqa: E402


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


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
