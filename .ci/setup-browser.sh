#!/usr/bin/env bash
# CI-only: Debian's Chromium for the dashboard's browser tests (Playwright drives it through
# executable_path; Playwright never downloads a browser).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
