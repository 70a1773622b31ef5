"""A flow run's `params_file`: inside the project root, or the platform's state folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from telescore.io.params_files import ParamsFileError, resolve_params_file


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "conf").mkdir(parents=True)
    (root / "params.yaml").write_text("training: {}\n")
    (root / "conf" / "params.yaml").write_text("training: {}\n")
    return root


def test_a_relative_name_inside_the_root_resolves(project: Path) -> None:
    # given files inside the project, when named relatively, then they resolve there
    assert resolve_params_file("params.yaml", project) == project / "params.yaml"
    assert resolve_params_file("conf/../conf/params.yaml", project) == (
        project / "conf" / "params.yaml"
    ), "a `..` that stays inside is harmless"


@pytest.mark.parametrize("name", ["../outside.yaml", "conf/../../outside.yaml", "../../etc/passwd"])
def test_a_dot_dot_escape_is_refused(project: Path, name: str) -> None:
    # given a name climbing out of the root, when resolved, then refused naming the parameter
    with pytest.raises(ParamsFileError, match="params_file.*outside the project root"):
        resolve_params_file(name, project)


def test_an_absolute_path_is_refused(project: Path, tmp_path: Path) -> None:
    # given an absolute path, even one inside the root, then refused without a state folder
    with pytest.raises(ParamsFileError, match="params_file.*relative to the project root"):
        resolve_params_file(str(project / "params.yaml"), project)
    with pytest.raises(ParamsFileError, match="params_file"):
        resolve_params_file("/etc/passwd", project, tmp_path / "state")


def test_a_symlink_leading_out_is_refused(project: Path, tmp_path: Path) -> None:
    # given a link inside the root to a file outside it
    outside = tmp_path / "evil.yaml"
    outside.write_text("training: {promotion: {min_improvement: -1}}\n")
    (project / "linked.yaml").symlink_to(outside)
    # when resolved, then refused: the link's target is what would be read
    with pytest.raises(ParamsFileError, match="outside the project root"):
        resolve_params_file("linked.yaml", project)


def test_an_absolute_path_in_the_state_folder_is_taken(project: Path, tmp_path: Path) -> None:
    # given the platform's state folder, where the replay writes its params
    state = tmp_path / "state"
    state.mkdir()
    (state / "params.yaml").write_text("training: {}\n")
    # when named by its absolute path, then it resolves
    resolved = resolve_params_file(str(state / "params.yaml"), project, state)
    assert resolved == state / "params.yaml", resolved
