#!/usr/bin/env bash
# CI-only: install and start a Docker engine, and make a local Debian base
# image with Python (no registry is reachable, so nothing may be pulled).
set -euo pipefail
BASE_TAG="${NANOCLAW_TEST_BASE_IMAGE:-nanoclaw-test-base:bookworm-tools}"
MIRROR="${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE '^(deb|URIs:)[^#]*https?://[^ ]+/debian( |$)' | grep -oE 'https?://[^ ]+' | head -n1 || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# What an agent needs in its container: a shell and the usual tools, git, curl, TLS roots,
# Python with pip/venv (for offline wheelhouse installs) and procps (process groups).
PACKAGES=python3,python3-pip,python3-venv,bash,coreutils,git,curl,ca-certificates,procps

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -n 40 /tmp/dockerd.log; exit 1; }
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    root=$(mktemp -d)
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >/tmp/debootstrap.log 2>&1 \
        || { tail -n 40 /tmp/debootstrap.log; exit 1; }
    tar -C "$root" -c . | docker import - "$BASE_TAG" >/dev/null
    rm -rf "$root"
fi
echo "docker ready; base image $BASE_TAG"
