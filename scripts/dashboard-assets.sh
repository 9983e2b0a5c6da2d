#!/usr/bin/env bash
# The dashboard's third-party browser libraries (htmx, its SSE extension, uPlot): installed
# from npm at the versions operator/assets/package-lock.json pins, then copied into the
# operator package (operator/drover_operator/api/dashboard/static/vendor/, gitignored) so the
# editable install, the wheel and the operator image serve them. Never committed.
# Idempotent; scripts/bootstrap.sh calls it, `make dashboard-assets` too.
set -euo pipefail
cd "$(dirname "$0")/../operator/assets"
if ! command -v npm >/dev/null; then
  echo "dashboard-assets: npm is missing: install Node.js and npm (Debian: apt-get install npm)" >&2
  exit 1
fi
# `npm ci` only when the lockfile changed since the last install (npm's cache makes it quick).
if ! cmp -s package-lock.json node_modules/.drover-installed 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.drover-installed
fi
vendor=../drover_operator/api/dashboard/static/vendor
mkdir -p "$vendor"
cp node_modules/htmx.org/dist/htmx.min.js "$vendor/htmx.min.js"
cp node_modules/htmx-ext-sse/dist/sse.min.js "$vendor/sse.min.js"
cp node_modules/uplot/dist/uPlot.iife.min.js "$vendor/uPlot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$vendor/uPlot.min.css"
