"""Prequential quality over a stream, window by window and pooled."""

from __future__ import annotations

import numpy as np
import pytest

from telescore.core.prequential import stream_quality


def test_windows_are_judged_on_their_own_rows_and_pooled_on_all() -> None:
    # given two windows: the first ranked perfectly, the second backwards
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.8, 0.2, 0.1])

    quality = stream_quality(labels, scores, window_rows=4)

    assert [w.roc_auc for w in quality.windows] == [1.0, 0.0], "each window ranks its own rows"
    assert quality.pooled_roc_auc == pytest.approx(0.5), "pooled over all rows"
    assert quality.windows[0].calibration_gap == pytest.approx(0.0), "mean 0.5 against rate 0.5"


def test_a_one_class_window_has_no_auc_but_counts_for_calibration() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 1])
    scores = np.array([0.3, 0.3, 0.3, 0.3, 0.2, 0.6, 0.2, 0.6])

    quality = stream_quality(labels, scores, window_rows=4)

    assert quality.windows[0].roc_auc is None, "no positives: AUC is undefined, not 0.5"
    assert quality.windows[0].top_decile_lift is None, "no positives: no lift"
    assert quality.mean_calibration_gap == pytest.approx((0.3 + 0.1) / 2)
    assert quality.mean_top_decile_lift == pytest.approx(2.0), "only the second window counts"


def test_labels_and_scores_must_pair_up() -> None:
    with pytest.raises(ValueError, match="3 labels for 2 scores"):
        stream_quality(np.array([0, 1, 0]), np.array([0.1, 0.2]), window_rows=2)


def test_windows_served_after_a_cold_start_keep_their_stream_numbers() -> None:
    # given the rows of stream windows 3 and 4 (windows 0-2 served by no model)
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.2, 0.7, 0.3, 0.6])
    # when their quality is measured / then they are numbered as in the stream
    quality = stream_quality(labels, scores, window_rows=2, first_window=3)
    assert [w.window for w in quality.windows] == [3, 4], quality.windows
