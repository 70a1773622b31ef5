"""k8s/: each overlay renders offline (kubectl kustomize) and passes the Kubernetes schemas."""

from __future__ import annotations

import base64
import json
import re

import pytest
from deploy_checks import (
    FIXTURES,
    JOB_TEMPLATE,
    MLFLOW_READER,
    MLFLOW_WRITER,
    MONGODB_USERS_SCRIPT,
    OVERLAYS,
    POSTGRES_ROLES_SCRIPT,
    POSTGRES_URI,
    REPO,
    configmap_secret_problems,
    container_session_key_holders,
    find,
    ingress_problems,
    manifests,
    minio_user_problems,
    mlflow_user_problems,
    mlserver_policy_problems,
    postgres_role_problems,
    render,
    render_overlay,
    uri_user_problems,
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
    assert opened == {"web-from-ingress-controller"}, (
        f"overlay {name}: open to the ingress: {opened}"
    )


def pod_labels(objects: list[dict]) -> dict[str, dict[str, str]]:
    """Labels of every pod the overlay runs, and of the flow runs' pods (the job template)."""
    pods = {
        each["metadata"]["name"]: each["spec"]["template"]["metadata"].get("labels", {})
        for each in objects
        if each["kind"] in WORKLOADS
    }
    flow_runs = json.loads(JOB_TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    pods["telescore-flow-run"] = flow_runs["spec"]["template"]["metadata"]["labels"]
    return pods


def test_mlserver_is_reachable_only_by_the_app_and_the_jobs(overlay, objects):
    # given every NetworkPolicy that selects MLServer's pods, and every pod the overlay runs
    name, _ = overlay
    pods = pod_labels(objects)
    # when the pods their rules let in are listed
    problems = mlserver_policy_problems(objects, pods, {"web", "telescore-flow-run"})
    # then only the web app and the flow runs (the monitor, the promotion) reach it
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)
    policy = find(objects, "NetworkPolicy", "mlserver-from-scoring-clients")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    reaching = {
        pod
        for pod, labels in pods.items()
        for peer in peers
        if peer["podSelector"]["matchLabels"].items() <= labels.items()
    }
    assert reaching == {"web", "telescore-flow-run"}, f"MLServer's clients: {reaching}"


def test_the_policy_check_catches_mlserver_opened_to_others():
    # given policies that open MLServer to the ingress controller, to all, and to one more pod
    mlserver = {"matchLabels": {"app.kubernetes.io/name": "mlserver"}}
    policies = [
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "to-ingress"},
            "spec": {
                "podSelector": mlserver,
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": INGRESS_CONTROLLER}}]}],
            },
        },
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "to-all"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 8080}]}]},
        },
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "to-label"},
            "spec": {
                "podSelector": mlserver,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"scorer": "true"}}}]}],
            },
        },
    ]
    pods = {"web": {"scorer": "true"}, "evidently": {"scorer": "true"}}
    # when checked / then each opening is named
    problems = "\n".join(mlserver_policy_problems(policies, pods, {"web"}))
    for expected in (
        "to-ingress: lets {'namespaceSelector'",
        "to-all: lets every pod",
        "to-label: lets evidently",
    ):
        assert expected in problems, f"the policy check missed {expected!r}:\n{problems}"
    assert "lets web" not in problems, f"the check refused an allowed pod:\n{problems}"


def test_no_ingress_routes_mlserver(overlay, objects):
    # given the overlay's Ingresses / then none reaches MLServer or routes one of its paths
    name, _ = overlay
    problems = ingress_problems(objects)
    assert problems == [], f"overlay {name} exposes MLServer:\n" + "\n".join(problems)


def test_no_ingress_in_the_k8s_folder_routes_mlserver():
    # given every manifest under k8s/, components an overlay might switch on included
    objects = [
        doc
        for path in sorted((REPO / "k8s").rglob("*.yaml"))
        for doc in manifests(path.read_text())
    ]
    # then no Ingress in any of them routes to MLServer
    problems = ingress_problems(objects)
    assert problems == [], "k8s/ has an MLServer route:\n" + "\n".join(problems)


def test_the_ingress_check_catches_a_v2_route():
    # given the canary Ingress the dev overlay had before issue 21, and a /v2 path elsewhere
    route = {"path": "/v2", "backend": {"service": {"name": "mlserver-challenger"}}}
    proxy = {"path": "/v2/models", "backend": {"service": {"name": "gateway"}}}
    ingresses = [
        {
            "kind": "Ingress",
            "metadata": {"name": "canary"},
            "spec": {"rules": [{"http": {"paths": [route, proxy]}}]},
        }
    ]
    # when checked / then both routes are named
    problems = "\n".join(ingress_problems(ingresses))
    assert "routes /v2 to mlserver-challenger" in problems, problems
    assert "MLServer's path /v2/models to gateway" in problems, problems


def test_no_configmap_holds_a_secret(overlay, objects):
    # given the overlay's ConfigMaps / then no key or value looks like a secret
    name, _ = overlay
    problems = configmap_secret_problems(objects)
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)


def test_the_configmap_check_catches_secrets():
    # given a ConfigMap with a password, a key and a URI with credentials
    config = {
        "kind": "ConfigMap",
        "metadata": {"name": "leaky"},
        "data": {
            "POSTGRES_PASSWORD": "x",
            "TELESCORE_API_SECRET_KEY": "y",
            "TELESCORE_MONGODB_URI": "mongodb://app:hunter2@mongodb:27017/",
            "TELESCORE_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        },
    }
    # when checked / then the three are named, the plain URI is not
    problems = "\n".join(configmap_secret_problems([config]))
    for expected in (
        "key POSTGRES_PASSWORD",
        "key TELESCORE_API_SECRET_KEY",
        "TELESCORE_MONGODB_URI holds a URI with credentials",
    ):
        assert expected in problems, f"the ConfigMap check missed {expected!r}:\n{problems}"
    assert "TRACKING_URI" not in problems, problems


def secret_data(objects: list[dict], name: str = "telescore-secrets") -> dict[str, str]:
    """The decoded data of a rendered Secret (rendered from secrets.env.example)."""
    secret = find(objects, "Secret", name)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def env_value(variable: dict, secrets: dict[str, str]) -> str:
    """A container variable's value, read from the Secret where it refers to one."""
    reference = variable.get("valueFrom", {}).get("secretKeyRef")
    return secrets[reference["key"]] if reference else variable.get("value", "")


def mongodb_uris(objects: list[dict]) -> dict[str, str]:
    """TELESCORE_MONGODB_URI of every container (workload/container), flow runs included."""
    secrets = secret_data(objects)
    uris = {}
    for workload, _, container in containers(objects):
        for variable in container.get("env", []):
            if variable["name"] == "TELESCORE_MONGODB_URI":
                uris[f"{workload}/{container['name']}"] = env_value(variable, secrets)
    manifest = json.loads(JOB_TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    (flow_run,) = manifest["spec"]["template"]["spec"]["containers"]
    for variable in flow_run["env"]:
        if variable["name"] == "TELESCORE_MONGODB_URI":
            uris["telescore-flow-run"] = env_value(variable, secrets)
    return uris


def test_no_workload_logs_in_to_mongodb_as_root(overlay, objects):
    # given the user MongoDB's image makes root, and each container's MongoDB URI
    name, _ = overlay
    (mongodb,) = [c for w, _, c in containers(objects) if w == c["name"] == "mongodb"]
    root = env_value(
        next(v for v in mongodb["env"] if v["name"] == "MONGO_INITDB_ROOT_USERNAME"),
        secret_data(objects),
    )
    uris = mongodb_uris(objects)
    # when the services' users are read: an MLServer pod's containers are one service (the
    # shipper), so they are checked under one name
    by_service = {
        ("mlserver" if key.startswith("mlserver-") else key.split("/")[0]): uri
        for key, uri in uris.items()
    }
    problems = uri_user_problems(by_service, root, MONGODB_USERS_SCRIPT.read_text())
    # then none is root, and each is a user the init script creates, one per service
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)
    users = {key: uri.split("://", 1)[1].split(":", 1)[0] for key, uri in uris.items()}
    assert {users["web/web"], users["telescore-flow-run"], users["mlserver-champion/mlserver"]} == {
        "telescore-app",
        "telescore-jobs",
        "telescore-shipper",
    }, f"users: {users}"


def test_mongodb_runs_the_users_script_on_first_start(objects):
    # given MongoDB's StatefulSet / then the users script is mounted in its init directory
    pod = find(objects, "StatefulSet", "mongodb")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    config = find(objects, "ConfigMap", volume["configMap"]["name"])
    assert config["data"].get(MONGODB_USERS_SCRIPT.name) == MONGODB_USERS_SCRIPT.read_text(), (
        "the ConfigMap does not hold k8s/base/mongodb-users.js as it is"
    )
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts.get(volume["name"]) == "/docker-entrypoint-initdb.d", f"mounts: {mounts}"


def test_mongodb_is_reachable_only_by_its_clients(objects):
    # given the policy that admits connections to MongoDB, and every pod the overlay runs
    policy = find(objects, "NetworkPolicy", "mongodb-from-clients")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for peer in peers), f"MongoDB is open to {peers}"
    # when the pods its peers select are listed
    reaching = {
        pod
        for pod, labels in pod_labels(objects).items()
        for peer in peers
        if peer["podSelector"]["matchLabels"].items() <= labels.items()
    }
    # then they are its three clients: the app, MLServer (its shipper), the flow runs
    assert reaching == {"web", "mlserver-champion", "mlserver-challenger", "telescore-flow-run"}, (
        f"pods reaching MongoDB: {sorted(reaching)}"
    )
    find(objects, "StatefulSet", "mongodb")


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


def test_the_data_stores_wait_for_every_secret_to_be_checked(objects):
    # given the Secret's keys that hold a secret (a password, a key, a URI with a password)
    secrets = {
        key
        for key in find(objects, "Secret", "telescore-secrets")["data"]
        if re.search(r"PASSWORD|SECRET|_URI$|_URL$", key)
    }
    for each in objects:
        if each["kind"] != "StatefulSet":
            continue
        # when a data store's pod starts / then its first init container checks them all
        pod = each["spec"]["template"]["spec"]
        first = pod.get("initContainers", [{}])[0]
        where = f"StatefulSet {each['metadata']['name']}"
        assert first.get("command", [None])[0] == "telescore-check-secrets", f"{where}: {first}"
        assert set(first["command"][1:]) == secrets, (
            f"{where} checks {sorted(first['command'][1:])}, the Secret holds {sorted(secrets)}"
        )


def test_a_flow_run_cannot_change_the_command_or_the_image_of_its_pod():
    # given the Kubernetes work pool's job template
    template = json.loads(JOB_TEMPLATE.read_text())
    variables = template["variables"]
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    # then no job variable sets the image, the command or the environment, and unknown ones
    # are refused
    locked = {"image", "command", "env", "args", "working_dir"} & set(variables["properties"])
    assert not locked, f"a run's job_variables may set {locked}"
    assert variables.get("additionalProperties") is False, "unknown job variables are accepted"
    # and nothing in the job configuration is filled from them: Prefect's worker starts the run
    configuration = json.dumps(template["job_configuration"])
    for placeholder in ("{{ image }}", "{{ command }}", "{{ env }}"):
        assert placeholder not in configuration, f"{placeholder} reaches the pod"
    assert not {"args", "command"} & set(container), f"the pod's command is set: {container}"
    # and the image is the template's own, which CD replaces when it updates the pool
    assert "{{" not in container["image"], f"the pod's image is templated: {container['image']}"


def test_only_the_web_app_is_given_the_session_key(overlay, objects):
    # given every container of the overlay, and the flow runs' pod of the work pool's template
    name, _ = overlay
    manifest = json.loads(JOB_TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    flow_runs = [
        ("telescore-flow-run", container)
        for container in manifest["spec"]["template"]["spec"]["containers"]
    ]
    every = [(workload, container) for workload, _, container in containers(objects)]
    # when those given the session key are listed
    holders = container_session_key_holders(every + flow_runs)
    # then the web app is the only one: MLServer and the flow runs can run a model's code
    assert holders == {"web/web"}, f"overlay {name}: the session key is given to {holders}"


def test_the_session_key_check_catches_a_container_given_it():
    # given a container given the key by name, one given the whole Secret, and the check's own
    by_name = {
        "name": "mlserver",
        "env": [
            {
                "name": "SIGNING",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "TELESCORE_API_SECRET_KEY"}},
            }
        ],
    }
    whole = {"name": "worker", "envFrom": [{"secretRef": {"name": "telescore-secrets"}}]}
    check = {"name": "secrets-check", "command": ["telescore-check-secrets"], **whole}
    # when checked / then the first two are named, the check is allowed
    holders = container_session_key_holders([("a", by_name), ("b", whole), ("c", check)])
    assert holders == {"a/mlserver", "b/worker"}, holders


def test_prefect_asks_every_write_for_a_csrf_token(overlay, objects):
    # given Prefect's server in the overlay / then its CSRF protection is on
    name, _ = overlay
    (container,) = find(objects, "Deployment", "prefect-server")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env.get("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED") == "true", f"overlay {name}: {env}"


# --- issue 21: the stores' own users ------------------------------------------------------

# Containers that may hold MinIO's root: MinIO, and the MLflow pod's set-up (minio-users.sh).
MINIO_ROOT_HOLDERS = {"minio/minio", "mlflow/buckets"}


def secret_env(objects: list[dict]) -> dict[str, dict[str, str]]:
    """Each container's (workload/container) environment, Secret references read; the flow
    runs' pods (the Prefect job template) and the Jobs included. `envFrom` (the secrets check
    reads the whole Secret that way) is left out: it names no variable."""
    secrets = secret_data(objects)
    pods = [
        (each["metadata"]["name"], each["spec"]["template"]["spec"])
        for each in objects
        if each["kind"] in (*WORKLOADS, "Job")
    ]
    manifest = json.loads(JOB_TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    pods.append(("telescore-flow-run", manifest["spec"]["template"]["spec"]))
    return {
        f"{name}/{container['name']}": {
            variable["name"]: env_value(variable, secrets) for variable in container.get("env", [])
        }
        for name, pod in pods
        for container in pod.get("initContainers", []) + pod["containers"]
    }


def secret_keys_used(objects: list[dict]) -> dict[str, set[str]]:
    """The Secret keys each container (workload/container) reads through `env`."""
    used: dict[str, set[str]] = {}
    for each in objects:
        if each["kind"] not in (*WORKLOADS, "Job"):
            continue
        pod = each["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            used[f"{each['metadata']['name']}/{container['name']}"] = {
                variable["valueFrom"]["secretKeyRef"]["key"]
                for variable in container.get("env", [])
                if "secretKeyRef" in variable.get("valueFrom", {})
            }
    return used


def test_no_workload_signs_in_to_postgresql_as_the_superuser(overlay, objects):
    # given each container's PostgreSQL URIs and the superuser PostgreSQL's image creates
    name, _ = overlay
    environments = secret_env(objects)
    superuser = environments["postgres/postgres"]["POSTGRES_USER"]
    uris = {
        container.split("/")[0]: " ".join(environment.values())
        for container, environment in environments.items()
        if POSTGRES_URI.search(" ".join(environment.values()))
    }
    # when each URI's role is read
    problems = postgres_role_problems(uris, superuser, POSTGRES_ROLES_SCRIPT.read_text())
    # then MLflow and Prefect each sign in as the role owning their database, and only they do
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)
    assert set(uris) == {"mlflow", "prefect-server"}, f"workloads with a PostgreSQL URI: {uris}"


def test_postgresql_runs_the_roles_script_on_first_start(objects):
    # given PostgreSQL's StatefulSet / then the roles script is mounted in its init directory
    pod = find(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    config = find(objects, "ConfigMap", volume["configMap"]["name"])
    assert POSTGRES_ROLES_SCRIPT.read_text() in config["data"].values(), (
        "the ConfigMap does not hold k8s/base/postgres-roles.sh as it is"
    )
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts.get(volume["name"]) == "/docker-entrypoint-initdb.d", f"mounts: {mounts}"
    assert {"MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD"} <= {v["name"] for v in container["env"]}


def test_mlflow_signs_in_to_minio_as_its_own_user_not_the_root(overlay, objects):
    # given the containers reading MinIO's root password, and MLflow's S3 access key
    name, _ = overlay
    holders = {c for c, keys in secret_keys_used(objects).items() if "MINIO_ROOT_PASSWORD" in keys}
    environment = secret_env(objects)["mlflow/mlflow"]
    root_user = secret_data(objects)["MINIO_ROOT_USER"]
    # when checked
    problems = minio_user_problems(
        holders, MINIO_ROOT_HOLDERS, environment["AWS_ACCESS_KEY_ID"], root_user
    )
    # then only MinIO and its set-up hold the root, and MLflow signs in as the user it creates
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)
    assert "MINIO_MLFLOW_PASSWORD" in secret_keys_used(objects)["mlflow/mlflow"], "MLflow's key"


def test_each_workload_signs_in_to_mlflow_as_its_user_and_only_the_set_up_is_admin(
    overlay, objects
):
    # given every container's environment, the flow runs' pods included
    name, _ = overlay
    environments = secret_env(objects)
    users = {c: e.get("MLFLOW_TRACKING_USERNAME") for c, e in environments.items()}
    # then what serves and shows models reads, the flow runs write
    expected = {
        container: MLFLOW_READER
        for container in environments
        if container.split("/")[0] in {"web", "mlserver-champion", "mlserver-challenger"}
    } | {"telescore-flow-run/prefect-job": MLFLOW_WRITER}
    problems = mlflow_user_problems(users, expected)
    assert problems == [], f"overlay {name}:\n" + "\n".join(problems)
    keys = secret_keys_used(objects)
    for container, user in expected.items():
        if container in keys:
            password = f"MLFLOW_{'READER' if user == MLFLOW_READER else 'WRITER'}_PASSWORD"
            assert password in keys[container], f"{container} signs in without {password}"
    # and only MLflow and the Job that creates the users hold the admin's password
    admins = {c for c, used in keys.items() if "MLFLOW_ADMIN_PASSWORD" in used}
    assert admins == {"mlflow/mlflow", "mlflow-users/mlflow-users"}, f"MLflow's admin: {admins}"
    mlflow = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["command"] == ["telescore-mlflow"], "MLflow runs without basic auth"
