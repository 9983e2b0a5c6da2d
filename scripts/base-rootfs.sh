#!/usr/bin/env bash
# The root filesystem `make images` builds the Drover images on when python:3.11-slim cannot be
# pulled (no Docker Hub here): Debian bookworm's minimal system (what debian:bookworm-slim
# holds), its Python 3.11, and a venv at /opt/venv that images/base/Dockerfile puts first on
# PATH, so `python` and `pip` work as in the official image. Nothing else.
#
#   scripts/base-rootfs.sh OUT.tar
#
# Reproducible: with the same package versions the tarball is bit-for-bit the same
# (mmdebstrap with a fixed SOURCE_DATE_EPOCH; pip writes hash-checked .pyc files under it).
# The packages are whatever bookworm (with its security updates) holds when this runs; set
# DEBIAN_MIRROR to a snapshot.debian.org URL to pin them to a date. The image build caches the
# result by this file's hash, so it runs once per machine (about 45 s).
set -euo pipefail
out=${1:?usage: $0 OUT.tar}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

export SOURCE_DATE_EPOCH=1704067200  # 2024-01-01: fixed, so the tarball depends on packages only
# Like debian:bookworm-slim: no manuals, docs (except copyrights) or translations.
exclude=('/usr/share/man/*' '/usr/share/doc/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*')
dpkgopts=()
for path in "${exclude[@]}"; do dpkgopts+=(--dpkgopt="path-exclude=$path"); done
dpkgopts+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')

mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv \
  "${dpkgopts[@]}" \
  --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
  bookworm "$out" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"
