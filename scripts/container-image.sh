#!/usr/bin/env bash
# Makes the container image the tests run curl in, once: a minimal Debian
# (bookworm, with curl, ca-certificates and the agent's libraries) built by debootstrap from
# Debian's packages and imported into podman; no registry is involved.
# Later runs find the image and return at once.
set -euo pipefail

IMAGE=localhost/plainsight-test:bookworm-2
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE" 2>/dev/null; then
    exit 0
fi
root=$(mktemp -d /var/tmp/plainsight-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=curl,ca-certificates,libelf1,libzstd1 bookworm "$root" "$MIRROR" >&2
tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE" >&2
echo "made $IMAGE" >&2
