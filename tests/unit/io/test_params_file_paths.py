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


SECRET = "s3cret-token-0123456789abcdefghijklmnopqrstuv"


@pytest.mark.parametrize(
    "name",
    [".telescore/mlserver-control-token", ".telescore/prefect-auth", ".env"],
)
def test_a_secret_file_inside_the_project_is_not_a_params_file(project: Path, name: str) -> None:
    # given the platform's secret files, which lie inside the project root embedded (the state
    # folder is `.telescore/`, the environment file `.env`)
    secret = project / name
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(f"{SECRET}\n")

    # when a flow run names one as its params_file, then it is refused before it is read,
    # naming the parameter, and the error (shown in Prefect's run state) holds nothing of it
    with pytest.raises(ParamsFileError, match="params_file.*YAML file") as refused:
        resolve_params_file(name, project, project / ".telescore")
    assert SECRET[:8] not in str(refused.value), f"the secret leaked: {refused.value}"


def test_a_yaml_named_link_to_a_secret_inside_the_project_is_refused(project: Path) -> None:
    # given a link named like a params file, inside the root, to the state folder's secret
    secret = project / ".telescore" / "prefect-auth"
    secret.parent.mkdir()
    secret.write_text(f"telescore:{SECRET}\n")
    (project / "evil.yaml").symlink_to(secret)

    # when named, then refused: what would be read is the link's target
    with pytest.raises(ParamsFileError, match="params_file.*YAML file"):
        resolve_params_file("evil.yaml", project)
