# CI's stand-in for prom/prometheus in docker/compose.ci.yaml: Debian's prometheus package on
# the Debian base that CI makes locally. Same paths as the official image.
ARG BASE=localhost/ci-base:bookworm
FROM ${BASE}
# No service may start inside an image build (policy-rc.d), and no recommends (web UI assets).
# Debian's package is not version-pinned: its version is whatever bookworm ships, like the base.
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
    && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown 65534:65534 /prometheus
# nobody, as in the official image
USER 65534:65534
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
