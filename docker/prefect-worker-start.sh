#!/bin/sh
# The Prefect worker of docker-compose: make sure its process pool exists, register the
# deployments of pipelines/prefect.yaml (as `telescore up` does), then become the worker.
# Flow runs are subprocesses of this container and inherit its environment (service URLs).
set -eu
pool="${TELESCORE_PREFECT_WORK_POOL:-telescore-process}"
cd "${TELESCORE_PROJECT_ROOT:-/app}"
prefect work-pool inspect "$pool" >/dev/null 2>&1 \
    || prefect work-pool create "$pool" --type process
prefect --no-prompt deploy --all --prefect-file pipelines/prefect.yaml
exec prefect worker start --pool "$pool" --type process --with-healthcheck
