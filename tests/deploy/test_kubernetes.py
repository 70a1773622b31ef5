"""k8s/: each overlay renders offline (kubectl kustomize) and passes the Kubernetes schemas."""

from __future__ import annotations

import json

import pytest
from deploy_checks import (
    FIXTURES,
    JOB_TEMPLATE,
    OVERLAYS,
    find,
    manifests,
    render,
    render_overlay,
    validate_manifests,
)

WORKLOADS = ("Deployment", "StatefulSet")
INGRESS_CONTROLLER = {"kubernetes.io/metadata.name": "ingress-nginx"}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, tmp_path_factory) -> tuple[str, str]:
    """(name, rendering) of each overlay, rendered once for the module."""
    return request.param, render_overlay(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def objects(overlay) -> list[dict]:
    return manifests(overlay[1])


def containers(objects: list[dict]):
    """(workload name, container) of every Deployment and StatefulSet, init containers too."""
    for each in objects:
        if each["kind"] in WORKLOADS:
            spec = each["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield each["metadata"]["name"], spec, container


def test_each_overlay_passes_the_kubernetes_schemas(overlay, tmp_path):
    # given an overlay rendered by kubectl / when kubernetes-validate checks it, strictly
    name, rendered = overlay
    result = validate_manifests(rendered, tmp_path)
    # then every object is valid, and none was skipped for want of a schema
    assert result.passed, f"overlay {name} breaks the Kubernetes {result.output}"
    assert "WARN" not in result.output, f"overlay {name}: objects left unchecked:\n{result.output}"


def test_kubernetes_validate_rejects_the_broken_manifest(tmp_path):
    # given a kustomization whose Deployment has a misspelt field and a port as text
    broken = FIXTURES / "k8s-broken"
    rendering = render(broken, broken, tmp_path)
    assert rendering.passed, f"the broken fixture should still render:\n{rendering.output}"
    # when it is validated / then it fails, naming the field
    result = validate_manifests(rendering.output, tmp_path)
    assert not result.passed, f"kubernetes-validate accepted the broken fixture:\n{result.output}"
    assert "deployment/web" in result.output, f"the error does not name it:\n{result.output}"


def test_kustomize_rejects_the_unrenderable_kustomization(tmp_path):
    # given a kustomization naming a file that does not exist / when rendered
    broken = FIXTURES / "k8s-unrenderable"
    result = render(broken, broken, tmp_path)
    # then kubectl fails, naming the file
    assert not result.passed, f"kubectl rendered the broken kustomization:\n{result.output}"
    assert "missing.yaml" in result.output, f"kubectl does not name the file:\n{result.output}"


def test_mlserver_is_probed_on_the_v2_health_endpoints(objects):
    for name in ("mlserver-champion", "mlserver-challenger"):
        container = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["http"] == 8080, f"{name} does not serve REST on 8080: {ports}"
        readiness = container["readinessProbe"]["httpGet"]
        liveness = container["livenessProbe"]["httpGet"]
        assert readiness["path"] == "/v2/health/ready", f"{name} readiness: {readiness}"
        assert liveness["path"] == "/v2/health/live", f"{name} liveness: {liveness}"


def test_the_web_app_is_probed_on_health(objects):
    container = find(objects, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health", "web readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health", "web liveness"


def test_every_container_has_resources_and_runs_as_non_root(objects):
    for workload, pod, container in containers(objects):
        where = f"{workload}/{container['name']}"
        resources = container.get("resources", {})
        assert resources.get("requests"), f"{where} requests no resources"
        assert resources.get("limits", {}).get("memory"), f"{where} has no memory limit"
        assert pod["securityContext"]["runAsNonRoot"] is True, f"{workload} may run as root"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_the_scaled_deployments_have_an_autoscaler_and_a_disruption_budget(objects):
    for name in ("web", "mlserver-champion"):
        autoscaler = find(objects, "HorizontalPodAutoscaler", name)
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == name, f"{name}'s HPA targets else"
        budget = find(objects, "PodDisruptionBudget", name)
        labels = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{name}'s PDB selects no pod of it"


def test_only_the_web_app_is_reachable_from_the_ingress_controller(overlay, objects):
    name, _ = overlay
    policies = [each for each in objects if each["kind"] == "NetworkPolicy"]
    find(objects, "NetworkPolicy", "default-deny-ingress")
    opened = {
        policy["metadata"]["name"]
        for policy in policies
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if peer.get("namespaceSelector", {}).get("matchLabels") == INGRESS_CONTROLLER
    }
    # The dev overlay switches the MLServer canary on, which opens MLServer to the ingress too.
    expected = {"web-from-ingress-controller"} | (
        {"mlserver-from-ingress-controller"} if name == "dev" else set()
    )
    assert opened == expected, f"overlay {name}: policies open to the ingress: {opened}"


def test_mlserver_is_reachable_only_by_scoring_clients(objects):
    policy = find(objects, "NetworkPolicy", "mlserver-from-scoring-clients")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert peers == [{"podSelector": {"matchLabels": {"telescore.io/scoring-client": "true"}}}]
    web = find(objects, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    assert web.get("telescore.io/scoring-client") == "true", "the web app cannot reach MLServer"
    flow_runs = json.loads(JOB_TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    labels = flow_runs["spec"]["template"]["metadata"]["labels"]
    assert labels.get("telescore.io/scoring-client") == "true", "flow runs cannot reach MLServer"


def test_mongodb_is_reachable_only_from_inside_the_namespace(objects):
    policy = find(objects, "NetworkPolicy", "mongodb-from-namespace")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert peers == [{"podSelector": {}}], f"MongoDB is open to {peers}"
    find(objects, "StatefulSet", "mongodb")


def test_the_canary_splits_by_ingress_nginx_weight_in_dev_only(overlay, objects):
    name, _ = overlay
    canaries = [
        each
        for each in objects
        if each["kind"] == "Ingress"
        and each["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/canary")
    ]
    if name == "prod":
        assert canaries == [], "prod exposes MLServer through the ingress"
        return
    (canary,) = canaries
    weight = canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]
    assert 0 < int(weight) < 100, f"canary weight {weight}"
    backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == "mlserver-challenger", f"the canary goes to {backend}"
    main = find(objects, "Ingress", "mlserver")
    assert main["spec"]["rules"][0]["host"] == canary["spec"]["rules"][0]["host"], "hosts differ"


def test_the_work_pool_template_names_objects_the_overlay_creates(objects):
    # given the Prefect Kubernetes work pool's job template
    template = json.loads(JOB_TEMPLATE.read_text())
    manifest = template["job_configuration"]["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # then it has what Prefect's worker insists on
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    assert container["name"] == "prefect-job", "Prefect's worker looks for container prefect-job"
    # and what it names exists in the rendered overlay
    find(objects, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
    for variable in container["env"]:
        if "valueFrom" in variable:
            find(objects, "Secret", variable["valueFrom"]["secretKeyRef"]["name"])
    find(objects, "PersistentVolumeClaim", pod["volumes"][0]["persistentVolumeClaim"]["claimName"])
    default_account = template["variables"]["properties"]["service_account_name"]["default"]
    find(objects, "ServiceAccount", default_account)


def test_a_flow_run_cannot_change_the_command_of_its_pod():
    # given the Kubernetes work pool's job template
    template = json.loads(JOB_TEMPLATE.read_text())
    variables = template["variables"]
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    # then no job variable sets the command or the environment, and unknown ones are refused
    locked = {"command", "env", "args", "working_dir"} & set(variables["properties"])
    assert not locked, f"a run's job_variables may set {locked}"
    assert variables.get("additionalProperties") is False, "unknown job variables are accepted"
    # and nothing in the job configuration is filled from them: Prefect's worker starts the run
    configuration = json.dumps(template["job_configuration"])
    for placeholder in ("{{ command }}", "{{ env }}"):
        assert placeholder not in configuration, f"{placeholder} reaches the pod"
    assert not {"args", "command"} & set(container), f"the pod's command is set: {container}"
