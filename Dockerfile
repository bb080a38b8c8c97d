# fsftpd container image: docker build -t fsftpd .   (docs/docker.md)
#
# BASE is any Debian-like image with python3 (3.11+) and its venv module; the official slim
# Python image by default. CI builds the same file on a locally made Debian base
# (--build-arg BASE=localhost/ci-base:bookworm) because it cannot pull images.
ARG BASE=python:3.12-slim-bookworm

# ---- build: a virtualenv with fsftpd and its appliance extra -------------------------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
# Dependencies from pyproject.toml alone, in their own layer: a code change reuses it.
COPY pyproject.toml docker/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml --build appliance > /src/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /src/requirements.txt
COPY README.md /src/
COPY app /src/app
# Then the app itself; the build tools and pip leave the venv (nothing to compile at run time).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet setuptools wheel pip \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/python -c "import fsftpd"

# ---- the image -------------------------------------------------------------------------------
FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fsftpd" \
      org.opencontainers.image.description="FTP server on asyncio whose homes live on local disk, memory or S3 (fsspec)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"

# UID 10001 in group 0, and /data group-owned by 0 with group write: the same image runs as
# this user, as any UID with group 0 (OpenShift's restricted SCC) or, with a bind-mounted
# /data, as the host user (--user "$(id -u):$(id -g)").
RUN useradd --system --uid 10001 --gid 0 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin fsftpd \
    && mkdir -p /data \
    && chown 10001:0 /data \
    && chmod 0775 /data
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/fsftpd/healthcheck.py

# The default passive range is the one EXPOSEd below; nothing writes outside /data and /tmp,
# so --read-only works (podman and Docker mount a tmpfs on /tmp with it).
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FSFTPD_HOME=/data \
    FSFTPD_PORT=2121 \
    FSFTPD_PASSIVE_PORTS=30000-30009 \
    FSFTPD_METRICS_PORT=9100
WORKDIR /data
VOLUME ["/data"]
USER 10001:0
EXPOSE 2121 30000-30009 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/fsftpd/healthcheck.py"]
# Exec form: fsftpd is PID 1 and gets SIGTERM itself (it drains, then exits 0).
ENTRYPOINT ["/opt/venv/bin/fsftpd"]
