"""Every integration imports together: a bad upgrade fails here, not on a user's machine."""

import importlib
from importlib.metadata import version

import pytest

MODULES = [
    "mlserver",
    "mlserver_mlflow",
    "prefect",
    "mlflow",
    "great_expectations",
    "deepchecks.tabular",
    "evidently",
    "dvc.repo",
    "pymongo",
    "sklearn",
    "fastapi",
    "nx_27017",
    "telescore.cli",
    "telescore.serving.runtime",
    "pipelines.training",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module: str) -> None:
    assert importlib.import_module(module) is not None, f"{module} failed to import"


def test_known_incompatibilities_are_avoided() -> None:
    major = lambda name: int(version(name).split(".")[0])  # noqa: E731
    assert major("numpy") < 2, "deepchecks 0.19 uses np.Inf, removed in numpy 2"
    assert major("pandas") < 3, "evidently 0.7 fails to import with pandas 3"
    assert tuple(map(int, version("uvloop").split(".")[:2])) < (0, 22), (
        "MLServer 1.7 workers crash with uvloop 0.22+"
    )
    assert tuple(map(int, version("scikit-learn").split(".")[:2])) < (1, 8), (
        "deepchecks 0.19 uses the removed 'max_error' scorer name"
    )
