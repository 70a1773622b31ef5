# MinIO (MLflow's artifacts and the DVC remote) as a non-root user. The official image runs as
# root and its /data volume is root's: this one owns a data folder for uid 1000, so that a named
# volume mounted there starts out writable by it.
FROM minio/minio:RELEASE.2025-09-07T16-13-09Z
RUN mkdir -p /var/lib/minio && chown 1000:1000 /var/lib/minio
USER 1000:1000
ENV MC_CONFIG_DIR=/tmp/.mc
EXPOSE 9000 9001
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
    CMD ["mc", "ready", "local"]
CMD ["server", "/var/lib/minio", "--console-address", ":9001"]
