"""The project root comes from the package, not the working directory; the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

import telescore
from telescore.settings import PROJECT_ROOT_VARIABLE, project_root


def test_the_project_root_is_the_checkout_holding_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a working directory outside the project, and no override
    monkeypatch.delenv(PROJECT_ROOT_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    # when the project root is asked for
    root = project_root()
    # then it is the folder above the package that holds the params and the flows
    assert root != tmp_path, "the working directory should not decide the project root"
    assert Path(telescore.__file__).resolve().is_relative_to(root), "the package is inside it"
    assert (root / "params.yaml").is_file(), "the project root should hold params.yaml"
    assert (root / "pipelines" / "prefect.yaml").is_file(), "and the flows' deployments"


def test_the_environment_overrides_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given TELESCORE_PROJECT_ROOT naming another folder (the image names /app)
    monkeypatch.setenv(PROJECT_ROOT_VARIABLE, str(tmp_path))
    # when the project root is asked for
    root = project_root()
    # then it is that folder
    assert root == tmp_path.resolve(), "the environment variable should name the project root"
