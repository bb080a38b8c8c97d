#!/usr/bin/env bash
# What the image and compose tests need on a Debian 12 machine, installed if missing:
# podman with runc (crun fails on these machines' hybrid cgroups), CNI's dnsname plugin (compose
# services find each other by name), iptables (port publishing), debootstrap (the CI base
# image, since no registry can be reached), promtool (Prometheus config check). Then the
# private containers.conf and localhost/ci-base:bookworm, made once per machine and cached by
# tag (about 60 s the first time). Called by tests/run.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."

APT_PACKAGES="podman runc debootstrap iptables golang-github-containernetworking-plugin-dnsname
ca-certificates prometheus"

missing=""
command -v podman >/dev/null || missing="yes"
command -v runc >/dev/null || missing="yes"
command -v debootstrap >/dev/null || missing="yes"
command -v iptables >/dev/null || missing="yes"
command -v promtool >/dev/null || missing="yes"
[ -e /usr/lib/cni/dnsname ] || missing="yes"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends $APT_PACKAGES >/dev/null
fi

started=$(date +%s)
python3 tests/image/podman.py setup
# Each code change leaves a superseded image layer behind (about 80 MB): drop dangling images
# older than a week, so a machine that keeps running CI does not fill its disk.
CONTAINERS_CONF=$(python3 tests/image/podman.py env | cut -d= -f2) \
    podman image prune -f --filter until=168h >/dev/null || true
echo "podman ready, CI base image in $(( $(date +%s) - started )) s"
