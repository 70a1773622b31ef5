"""Backtest grid files: the shipped one resolves, a bad one is refused naming its field; patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from telescore.core.backtest_grid import _merged, params_patch, resolve_candidate
from telescore.core.params import TrainingParams
from telescore.io.params_files import (
    ParamsFileError,
    load_backtest_plan,
    load_training_params,
    write_params_patch,
)

ROOT = Path(__file__).resolve().parents[3]
PARAMS = ROOT / "params.yaml"


def _grid(folder: Path, text: str) -> Path:
    path = folder / "grid.yaml"
    path.write_text(text)
    return path


def test_the_shipped_grid_resolves_every_candidate_against_params_yaml() -> None:
    # given the repository's backtest.yaml and params.yaml
    # when the plan is loaded
    plan = load_backtest_plan(ROOT / "backtest.yaml", PARAMS)

    # then every candidate resolves, "params" is params.yaml itself, and an extending candidate
    # keeps what it extends
    names = [each.name for each in plan.candidates]
    assert names[:2] == ["params", "direct"], f"the first candidates: {names}"
    assert plan.candidates[0] == plan.base, "the `params` candidate is the params file"
    direct = plan.candidates[1]
    assert direct.monitoring.policy.retrain_every_windows == 2, "its own override"
    assert direct.training.release.mode == "direct", "its own override"
    assert direct.release == plan.base.release, "params.yaml's release rules otherwise"
    assert direct.training.model == plan.base.training.model, "params.yaml's model otherwise"
    assert direct.retraining.data.production.enabled, "retrain_overrides applied to retraining"
    assert plan.grid.selection.release_modes == ("shadow", "canary"), "online tests only"
    assert len(plan.grid.variants.streams()) == 27, "3 windows x 3 delays x 3 first champions"
    assert {each.request_rows for each in plan.grid.variants.streams()} == {20}, "the replay's"


def test_a_grid_plays_its_streams_in_requests_of_its_own_size(tmp_path: Path) -> None:
    # given a grid whose deployment scores 4 rows a request
    path = _grid(tmp_path, "candidates: [{name: a}]\nvariants: {request_rows: 4}")
    # when it is loaded / then every stream variant counts a release's requests of 4 rows
    plan = load_backtest_plan(path, PARAMS)
    assert {each.request_rows for each in plan.grid.variants.streams()} == {4}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "candidates: [{name: a, overrides: {training: {model: {C: -1}}}}]",
            "candidates.a.training.model.C",
        ),
        (
            "candidates: [{name: a, overrides: {training: {model: {Cx: 1}}}}]",
            "candidates.a.training.model.Cx",
        ),
        (
            "candidates: [{name: a, overrides: {monitoring: {policy: {windows_required: 5}}}}]",
            "candidates.a.monitoring.policy",
        ),
        (
            "candidates: [{name: a, overrides: {training: {data: {path: other.csv}}}}]",
            "candidates.a.training.data.path",
        ),
        ("candidates: [{name: a}]\nvariants: {window_rows: [0]}", "variants.window_rows.0"),
        (
            "candidates: [{name: a}]\nvariants: {label_delay_rows: [10], label_delay_windows: [1]}",
            "label_delay_rows or label_delay_windows",
        ),
        ("candidates: [{name: a}]\nvariants: {request_rows: 0}", "variants.request_rows"),
        ("candidates: [{name: a}]\nselection: {folds: 1}", "selection.folds"),
        ("candidates: [{name: a}, {name: a}]", "a repeated"),
        ("candidates: [{name: a, extends: b}, {name: b}]", "candidates.0.extends"),
        ("candidates: []", "candidates"),
        ("candidates: [{name: a, overides: {}}]", "candidates.0.overides"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_field(tmp_path: Path, text: str, named: str) -> None:
    # given a grid file with one fault
    path = _grid(tmp_path, text)

    # when it is loaded, then the error names the file and the field at fault
    with pytest.raises(ParamsFileError) as refused:
        load_backtest_plan(path, PARAMS)
    message = str(refused.value)
    assert str(path) in message, f"the file is named: {message}"
    assert named in message, f"{named!r} is named: {message}"


def test_the_patch_holds_only_the_changed_fields_and_makes_the_candidate(tmp_path: Path) -> None:
    # given a candidate restating params.yaml's C (0.01) and changing the holdout and the policy
    document: dict[str, Any] = yaml.safe_load(PARAMS.read_text())
    overrides = {
        "training": {"model": {"C": 0.01}, "split": {"holdout_rows": 2000}},
        "monitoring": {"policy": {"retrain_every_windows": 2}},
    }
    base = resolve_candidate(document, "params", {})
    candidate = resolve_candidate(document, "c", overrides)

    # when its patch is computed and written
    patch = params_patch(base, candidate)
    path = write_params_patch(tmp_path / "patch.yaml", patch, "recommended: c\nsecond line")

    # then only the changed fields are in it, under a comment
    expected = {
        "training": {"split": {"holdout_rows": 2000}},
        "monitoring": {"policy": {"retrain_every_windows": 2}},
    }
    assert patch == expected, f"only what changes: {patch}"
    text = path.read_text()
    assert text.startswith("# recommended: c\n# second line\n"), f"the header: {text[:60]!r}"
    assert yaml.safe_load(text) == expected, "the file holds the patch"
    # and params.yaml with the patch merged in is the candidate
    merged = tmp_path / "params.yaml"
    merged.write_text(yaml.safe_dump(_merged(document, yaml.safe_load(text))))
    assert load_training_params(merged) == candidate.training, "the patched training section"


def test_a_candidate_equal_to_the_params_file_has_an_empty_patch(tmp_path: Path) -> None:
    # given the params file itself as a candidate
    document = yaml.safe_load(PARAMS.read_text())
    base = resolve_candidate(document, "params", {})

    # when its patch is written
    patch = params_patch(base, base)
    path = write_params_patch(tmp_path / "patch.yaml", patch, "nothing to change")

    # then it changes nothing
    assert patch == {}, "no field changes"
    assert yaml.safe_load(path.read_text()) == {}, "an empty mapping, still valid YAML"
    assert isinstance(base.training, TrainingParams), "resolved into the training model"
