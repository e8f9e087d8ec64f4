#!/usr/bin/env bash
# Prepare a test machine for the container tests (as root). Safe to run again.
#   - checks podman, runc and debootstrap are installed (bootstrap.sh installs them);
#   - checks podman works with infra/images/containers.conf (runc, cgroupfs, no ulimits);
#   - makes the Debian 12 base image localhost/debian-base:bookworm from a debootstrap'ed
#     minbase root, once: no container registry is reachable here, so the Dockerfiles take
#     their base as a build argument (the official image in production, this one in tests).
# The container fixtures (tests/container/images.py) export the same CONTAINERS_CONF.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-base:bookworm}

say() { printf '==> %s\n' "$*" >&2; }

for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run ./bootstrap.sh test" >&2; exit 1; }
done

# The mirror this machine's apt already uses (debootstrap's default when none is found).
apt_mirror() {
  grep -rhoE '(URIs:[[:space:]]*|^deb[[:space:]]+)https?://[^[:space:]]+' \
      /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | grep -oE 'https?://[^[:space:]]+/debian/?$' | head -n 1 || true
}

make_base() {
  local root mirror
  root=$(mktemp -d /var/tmp/debian-base.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  mirror=$(apt_mirror)
  say "debootstrapping a minbase bookworm root (${mirror:-debootstrap default mirror})"
  debootstrap --variant=minbase bookworm "$root" ${mirror:+"$mirror"} >/dev/null
  # Like the official slim image, ship no downloaded .debs, apt caches or package lists:
  # they would double the size of every image built on this one.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
  # Imported roots carry no config: without PATH every command is "not found".
  tar -C "$root" -c . | podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD=["/bin/bash"]' --quiet - "$BASE_IMAGE" >/dev/null
  say "imported $BASE_IMAGE"
}

podman image exists "$BASE_IMAGE" || make_base
# A container that starts proves the runtime settings (runc, cgroupfs, no ulimits) work.
podman run --rm --read-only --network none --user 65534:65534 "$BASE_IMAGE" true
say "podman ready (CONTAINERS_CONF=$CONTAINERS_CONF, base $BASE_IMAGE)"
