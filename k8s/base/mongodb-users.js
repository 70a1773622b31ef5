// One MongoDB user per telescore service, each with a role on its own collections only; none
// of them is root. The official mongo image runs this once, on an empty data directory, as the
// root user (/docker-entrypoint-initdb.d): compose mounts it there, and k8s/base makes a
// ConfigMap of it for the StatefulSet. It is safe to run again on a running server, to add
// the users to an older volume or to change a password:
//   mongosh -u root -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin mongodb-users.js
// (with MONGO_APP_PASSWORD, MONGO_SHIPPER_PASSWORD and MONGO_JOBS_PASSWORD in the environment).
//
// The collections are those of src/telescore/io/*_store.py. Read-and-write is find, insert,
// update, remove, createIndex and createCollection (an index made before the first insert
// creates its collection): no drop, no rename, nothing on other databases.
const database = process.env.TELESCORE_MONGODB_DATABASE || "telescore";
const readWrite = ["find", "insert", "update", "remove", "createIndex", "createCollection"];
const readOnly = ["find"];

function privileges(grants) {
  return Object.entries(grants).flatMap(([actions, collections]) =>
    collections.map((collection) => ({
      resource: { db: database, collection: collection },
      actions: actions === "readWrite" ? readWrite : actions === "readOnly" ? readOnly : actions.split(","),
    })),
  );
}

const services = [
  {
    // The web app: logins and keys, prospects, calls, call lists, outcomes, routing.
    user: "telescore-app",
    role: "telescoreApp",
    password: "MONGO_APP_PASSWORD",
    grants: {
      readWrite: [
        "users", "api_keys", "login_failures", "prospects", "indicators", "calls", "call_lists",
        "call_list_chunks", "outcomes", "outcomes_expired", "routing", "release_decisions",
        "serving_baselines",
      ],
      readOnly: ["predictions", "serving_counters", "monitoring_runs", "retraining_decisions"],
    },
  },
  {
    // The shipper in each MLServer pod: the prediction log and the serving counters it
    // writes. It cannot read outcomes, users or keys, nor change a prediction once written.
    user: "telescore-shipper",
    role: "telescoreShipper",
    password: "MONGO_SHIPPER_PASSWORD",
    grants: {
      "find,insert,createIndex,createCollection": ["predictions"],
      "find,insert,update,createIndex,createCollection": ["serving_counters"],
    },
  },
  {
    // The jobs (flow runs: training, the monitor, the promotion). No users or API keys; the
    // prediction log and the serving counters are read (old counters forgotten), never written.
    user: "telescore-jobs",
    role: "telescoreJobs",
    password: "MONGO_JOBS_PASSWORD",
    grants: {
      readWrite: [
        "prospects", "indicators", "calls", "call_lists", "call_list_chunks", "outcomes",
        "outcomes_expired", "routing", "release_decisions", "serving_baselines", "monitoring_runs",
        "retraining_decisions",
      ],
      readOnly: ["predictions"],
      "find,remove": ["serving_counters"],
    },
  },
];

const target = db.getSiblingDB(database);
for (const service of services) {
  const password = process.env[service.password];
  if (!password) {
    throw new Error(`${service.password} is not set: cannot create MongoDB user ${service.user}`);
  }
  const role = { privileges: privileges(service.grants), roles: [] };
  if (target.getRole(service.role)) {
    target.updateRole(service.role, role);
  } else {
    target.createRole({ role: service.role, ...role });
  }
  const user = { pwd: password, roles: [{ role: service.role, db: database }] };
  if (target.getUser(service.user)) {
    target.updateUser(service.user, user);
  } else {
    target.createUser({ user: service.user, ...user });
  }
  print(`telescore: MongoDB user ${service.user} has role ${service.role} on ${database}`);
}
