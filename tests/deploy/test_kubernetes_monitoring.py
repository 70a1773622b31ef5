"""k8s/components/monitoring: kube-prometheus-stack's objects for telescore, with an overlay.

Rendered into the prod overlay as an operator switches it on; the Kubernetes objects pass the
Kubernetes schemas (kubernetes-validate), the operator's (ServiceMonitor, PrometheusRule) pass
the operator's CRD schemas (tools/crd-schemas), and the PrometheusRule is the rules file.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from deploy_checks import (
    CRD_SCHEMAS,
    FIXTURES,
    KUBECTL,
    REPO,
    RULES_FILE,
    find,
    manifests,
    mlserver_policy_problems,
    validate_manifests,
)
from prometheus_rule import PROMETHEUS_RULE, render
from test_kubernetes import pod_labels

MONITORING_GROUP = "monitoring.coreos.com/v1"


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> list[dict]:
    """The prod overlay with the monitoring component switched on, rendered by kubectl."""
    work = tmp_path_factory.mktemp("monitoring")
    tree = work / "k8s"
    shutil.copytree(REPO / "k8s", tree)
    for example in tree.rglob("secrets.env.example"):
        shutil.copyfile(example, example.with_name("secrets.env"))
    overlay = tree / "overlays" / "prod-with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "telescore",
                "resources": ["../prod"],
                "components": ["../../components/monitoring"],
            }
        )
    )
    result = KUBECTL.run("kustomize", overlay)
    assert result.passed, f"the overlay with the component does not render:\n{result.output}"
    return manifests(result.output)


def test_the_kubernetes_objects_pass_the_kubernetes_schemas(objects, tmp_path):
    core = [each for each in objects if each["apiVersion"] != MONITORING_GROUP]
    result = validate_manifests(yaml.safe_dump_all(core), tmp_path)
    assert result.passed, f"the overlay with monitoring breaks the Kubernetes {result.output}"
    assert "WARN" not in result.output, f"objects left unchecked:\n{result.output}"


def test_the_operator_objects_pass_the_crd_schemas(objects, tmp_path):
    # given the ServiceMonitors and the PrometheusRule of the rendering
    crds = [each for each in objects if each["apiVersion"] == MONITORING_GROUP]
    assert {each["kind"] for each in crds} == {"ServiceMonitor", "PrometheusRule"}, crds
    path = tmp_path / "crds.json"
    path.write_text(json.dumps(crds))
    # when the operator's schemas check them / then every one is valid
    result = CRD_SCHEMAS.run(path)
    assert result.passed, f"the CRD schemas refuse:\n{result.output}"
    assert f"{len(crds)} object(s), 0 problem(s)" in result.output, result.output


def test_the_crd_schemas_reject_the_broken_service_monitor():
    # given a ServiceMonitor with no selector, a port as a number and a duration in words
    result = CRD_SCHEMAS.run(FIXTURES / "broken-service-monitor.json")
    # when checked / then it is refused, naming each fault
    assert not result.passed, f"the broken ServiceMonitor passed:\n{result.output}"
    for fault in ("required property selector", "port must be string", "interval must match"):
        assert fault in result.output, f"the check missed {fault!r}:\n{result.output}"


def test_the_prometheus_rule_is_the_rules_file(objects):
    # given the rendered PrometheusRule and the shipped rules
    rule = find(objects, "PrometheusRule", "telescore")
    rules = yaml.safe_load(RULES_FILE.read_text())
    # then it holds the same groups, and its file is what the generator writes
    assert rule["spec"]["groups"] == rules["groups"], (
        "k8s/components/monitoring/prometheus-rule.yaml differs from the rules: "
        "run `.venv/bin/python tests/deploy/prometheus_rule.py`"
    )
    assert PROMETHEUS_RULE.read_text() == render(), "run tests/deploy/prometheus_rule.py"


def test_each_service_monitor_scrapes_a_named_port_of_its_services_as_the_rules_job(objects):
    rules_text = RULES_FILE.read_text()
    for name in ("mlserver", "web"):
        monitor = find(objects, "ServiceMonitor", name)["spec"]
        selector = monitor["selector"]["matchLabels"]
        services = [
            each
            for each in objects
            if each["kind"] == "Service"
            and selector.items() <= each["metadata"].get("labels", {}).items()
        ]
        assert services, f"ServiceMonitor {name} selects no Service"
        for service in services:
            ports = {port["name"] for port in service["spec"]["ports"]}
            for endpoint in monitor["endpoints"]:
                assert endpoint["port"] in ports, f"{service['metadata']['name']} has no {endpoint}"
            # the job label is the Service's label, which the rules' `up{job=...}` names
            job = service["metadata"]["labels"][monitor["jobLabel"]]
            assert f'up{{job="{job}"}}' in rules_text, f"no rule watches job {job}"


def test_prometheus_reaches_mlserver_only_on_its_metrics_port(objects):
    # given the component's policy for MLServer / then it opens the metrics port alone
    policy = find(objects, "NetworkPolicy", "mlserver-metrics-from-prometheus")
    (rule,) = policy["spec"]["ingress"]
    assert [port["port"] for port in rule["ports"]] == [8082], rule
    # and with it, still only the app and the flow runs reach MLServer's APIs
    problems = mlserver_policy_problems(objects, pod_labels(objects), {"web", "telescore-flow-run"})
    assert problems == [], "\n".join(problems)


def test_the_promotion_reads_the_clusters_prometheus_with_the_component_on(objects):
    # given the rendering with the component on: the config every platform process reads
    config = find(objects, "ConfigMap", "telescore-config")["data"]
    # then the promotion's guards are pointed at the operator's Prometheus, the rest kept
    assert config.get("TELESCORE_PROMETHEUS_URL") == (
        "http://prometheus-operated.monitoring.svc:9090"
    ), f"the guards' Prometheus: {config}"
    assert config.get("TELESCORE_MONGODB_DATABASE") == "telescore", "the merge dropped the base's"
