#!/usr/bin/env bash
# One PostgreSQL role per database, neither of them a superuser: `mlflow` owns MLflow's two
# databases (`mlflow`: runs and the registry; `mlflow_auth`: its users and permissions) and
# `prefect` owns Prefect's (`prefect`). Nobody else may connect to them but the superuser
# (POSTGRES_USER), which is the operator's and no service's.
#
# The postgres image runs it once, on its first start (an empty data volume): compose mounts it
# in /docker-entrypoint-initdb.d, k8s/base makes a ConfigMap of it for the StatefulSet. The
# passwords come from the environment (.env, the Secret): none is written here, and psql
# quotes them (:'name'), so that no password can end the statement.
set -e
psql --no-psqlrc --set ON_ERROR_STOP=1 --username "${POSTGRES_USER:?}" --dbname postgres \
    --set mlflow_password="${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}" \
    --set prefect_password="${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD}" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
-- PUBLIC may connect to every new database by default: only each owner may, here.
REVOKE ALL ON DATABASE mlflow, mlflow_auth, prefect FROM PUBLIC;
SQL
