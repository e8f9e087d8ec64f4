#!/usr/bin/env bash
# Install everything Ecstatic needs on Debian 12 (as root), then either start the local
# stack or run the whole test suite. Safe to run again: finished steps are skipped.
#   ./bootstrap.sh up     install, then start the stack and print a quickstart
#   ./bootstrap.sh test   install, then run every test (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"

# Builds run user commands in bubblewrap; Hugo is the generator Debian ships.
APT_PACKAGES=(caddy prometheus prometheus-alertmanager git curl ca-certificates python3 python3-venv
  python3-dev gcc chromium bubblewrap hugo)
# Only the test suite needs these: containers (podman with runc, debootstrap for the base
# image) and cloud-init's own schema validator for the Pulumi program's user data.
# catatonit: podman's pause binary, which `podman kube play` needs for a pod's infra container.
# goaccess: the log analyser bench/intake.py measures the intake against.
TEST_APT_PACKAGES=(podman runc catatonit debootstrap uidmap slirp4netns fuse-overlayfs cloud-init goaccess)
VENV=.venv

say() { printf '==> %s\n' "$*" >&2; }

install_system() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Recommends would pull in exporters and services Ecstatic does not use.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_python() {
  # Debian's own Python, so the virtualenv does not depend on whatever else is on PATH.
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; /usr/bin/python3 -m venv "$VENV"; }
  local stamp="$VENV/.installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the project and its dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[test,infra,builders]'
    echo "$want" > "$stamp"
  fi
}

case "${1:-}" in
  up)
    install_system "${APT_PACKAGES[@]}"; install_python
    exec "$VENV/bin/ecstatic" up
    ;;
  test)
    install_system "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; install_python
    # podman settings and the Debian base image the container tests build on (no registry).
    infra/images/prepare-podman.sh
    shift
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: $0 up|test [pytest args]" >&2
    exit 2
    ;;
esac
