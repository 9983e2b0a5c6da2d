#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine: system packages (Postgres server;
# buildah, mmdebstrap, umoci and skopeo for images), a Python venv with the project and its dev
# dependencies. Idempotent; the Makefile calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need_apt+=(postgresql)
command -v runuser >/dev/null || need_apt+=(util-linux)
# Images without Docker (`make images`, pods in images on the local cluster).
for tool in buildah mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
# The dashboard: its browser libraries come from npm; its tests drive Debian's Chromium.
command -v npm >/dev/null || need_apt+=(npm)
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap: missing ${need_apt[*]} and no apt-get: install them with your package manager" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  # Debian's package starts a system-wide cluster we don't use; tests run their own.
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

if ! command -v go >/dev/null; then
  echo "bootstrap: Go is not on PATH. The local cluster builds Kubernetes, etcd and Helm from" \
       "their Go modules: install Go 1.25 or newer (https://go.dev/doc/install)." >&2
  exit 1
fi

# The dashboard's browser libraries, copied into the operator package (gitignored).
scripts/dashboard-assets.sh

# Python dependencies: the three distributions of this repository (editable) and the
# development tools, at the versions pinned in uv.lock. uv itself comes from PyPI, pinned here;
# its download cache (~/.cache/uv) makes a second install take seconds.
UV_VERSION=0.13.9
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# --inexact: keep uv itself (installed above with pip) in the venv.
UV_PROJECT_ENVIRONMENT="$VENV" "$VENV/bin/uv" sync --frozen --inexact --all-packages \
  --python "$VENV/bin/python" ${BOOTSTRAP_GROUPS:-}
