#!/bin/sh
# MinIO's buckets, and MLflow's own MinIO user: run as MinIO's root, the one place root is used
# (compose: the one-shot `minio-init`; Kubernetes: the MLflow pod's init container `buckets`).
# MLflow signs in to MinIO as `telescore-mlflow`, whose policy reaches the `mlflow` bucket only
# (its artifacts): not the DVC remote, not MinIO's users or settings. Idempotent: it runs on
# every start, and sets the password given now. The passwords come from the environment
# (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, MINIO_MLFLOW_PASSWORD): none is written here.
set -eu
mc alias set minio "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing minio/mlflow minio/dvc
policy="${TMPDIR:-/tmp}/mlflow-artifacts.json"
printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::mlflow"]
    },
    {
      "Effect": "Allow",
      "Action": [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts"
      ],
      "Resource": ["arn:aws:s3:::mlflow/*"]
    }
  ]
}' >"$policy"
mc admin policy create minio mlflow-artifacts "$policy"
mc admin user add minio telescore-mlflow "$MINIO_MLFLOW_PASSWORD"
# A second run finds the policy attached already: MinIO says so, and that is success.
if ! attached=$(mc admin policy attach minio mlflow-artifacts --user telescore-mlflow 2>&1); then
    case "$attached" in
        *"already in effect"*) ;;
        *) echo "$attached" >&2 && exit 1 ;;
    esac
fi
