"""The README's curl and Python examples work against a real MLServer."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:8080"


def _block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)
    return next(block for block in blocks if containing in block)


def test_curl_example_returns_a_probability(mlserver) -> None:  # type: ignore[no-untyped-def]
    # given the README's curl command, pointed at the test server
    command = _block("bash", "curl -s -X POST").replace(DEFAULT_URL, mlserver.rest_url)
    command = command.split("\n# ")[0]  # drop the commented sample answer
    # when it runs in a shell
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    body = json.loads(done.stdout)
    # then it answers a probability for its one prospect, its id and the version
    assert body["id"] == "call-42", "the request id must be echoed"
    assert body["model_version"], "the resolved registry version must be returned"
    (probability,) = body["outputs"][0]["data"]
    assert 0.0 <= probability <= 1.0, "a probability"


def test_python_example_prints_a_probability(mlserver, capsys) -> None:  # type: ignore[no-untyped-def]
    code = _block("python", "import httpx").replace(DEFAULT_URL, mlserver.rest_url)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    request_id, version, scores = capsys.readouterr().out.split(" ", 2)
    assert request_id, "an id is generated when the request has none"
    assert version.isdigit(), "the resolved registry version is printed"
    assert 0.0 <= json.loads(scores)[0] <= 1.0, "a probability"
