#!/usr/bin/env bash
# Build the CPU image's base (Debian bookworm, minbase) from Debian's own packages and import it into podman
# as localhost/debian:bookworm-slim, for machines that reach Debian's mirror but no image registry (CI here).
# Skipped when the image is already there. Needs root, debootstrap and podman.
set -euo pipefail
name=${1:-localhost/debian:bookworm-slim}
if podman image exists "$name"; then
    echo "base image $name already present"
    exit 0
fi
# the mirror apt already uses on this machine
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2=="bookworm"{print $1; exit}')
mirror=${mirror:-http://deb.debian.org/debian/}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > /dev/null
tar -C "$rootfs" -c . | podman import - "$name" > /dev/null
echo "base image $name imported from $mirror"
