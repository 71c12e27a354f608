#!/usr/bin/env bash
# Install Debian packages once (idempotent): `scripts/ci/apt.sh [--no-recommends] PKG...`.
# Packages already installed are not touched and `apt-get update` runs only when something is missing.
# --no-recommends: only what the packages depend on (gromacs: 13 s instead of its recommended extras).
# Needs root (or passwordless sudo); CI and the development machines run as root.
set -euo pipefail
opts=()
if [ "${1:-}" = "--no-recommends" ]; then
    opts=(--no-install-recommends)
    shift
fi
missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "error: Debian packages missing (${missing[*]}) and no root to install them" >&2
    exit 1
fi
echo "apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q >/dev/null
"${SUDO[@]}" apt-get install -y -q "${opts[@]}" "${missing[@]}" >/dev/null
