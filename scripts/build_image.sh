#!/usr/bin/env bash
# Builds the dlhisto image of containers/Dockerfile on this machine with Debian's podman/buildah,
# where no container registry can be reached: the two Python base images the Dockerfile starts
# from are made here, from Debian packages (debootstrap) and the CPython builds CI tests with.
#
#   scripts/build_image.sh [TARGET]     TARGET: cuda (default; the image the tools name) or cpu
#
#   1. localhost/python:3.11.7-slim-bookworm and localhost/python:3.13.0-slim-bookworm: Debian 12
#      (debootstrap --variant=minbase, with the C libraries CPython links to) plus that CPython
#      under /usr/local, as Docker Hub's python images have it; pip from its ensurepip.
#   2. podman build --isolation chroot (RUN steps need no OCI runtime; see podman_docker.sh for
#      running the image here) of containers/Dockerfile with those bases, tagged as tools/macros.xml
#      names it. pip inside the build reaches PyPI, with this machine's certificate authorities,
#      and its wheel folders (torch is there) through a pip.conf mounted for the build only.
#
# The 'cpu' target takes torch from PyTorch's CPU index (download.pytorch.org), which this
# machine cannot reach: here only 'cuda' builds; it runs on CPU-only nodes as well.
# Takes about 20 minutes the first time (zeroc-ice is compiled in the build), seconds once the
# layers are cached. Needs root, podman, buildah and debootstrap (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

TARGET=${1:-cuda}
VERSION=$(sed -n 's/.*<token name="@TOOL_VERSION@">\(.*\)<\/token>.*/\1/p' tools/macros.xml)
IMAGE="ghcr.io/dlhisto/dlhisto:$VERSION$([ "$TARGET" = cpu ] && echo -cpu || true)"
WORK=${IMAGE_WORK:-$DLHISTO_CACHE/image-build}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the C libraries Docker Hub's slim images carry for CPython's modules (ssl, sqlite3, ctypes, ...)
BASE_PACKAGES=ca-certificates,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libexpat1,libgdbm6,netbase,tzdata

log() { echo "[$(date +%H:%M:%S)] image: $*" >&2; }

# the CPython that CI tests with (pyenv's build of this machine kind), by version
python_prefix() {
    local prefix="$HOME/.pyenv/versions/$1"
    [ -x "$prefix/bin/python${1%.*}" ] || { log "no CPython $1 at $prefix"; return 1; }
    echo "$prefix"
}

# base_image VERSION: localhost/python:VERSION-slim-bookworm, unless it exists
base_image() {
    local version=$1 short=${1%.*} tag="localhost/python:$1-slim-bookworm" prefix rootfs
    podman image exists "$tag" && return 0
    prefix=$(python_prefix "$version")
    rootfs="$WORK/rootfs-$version"
    log "$tag: Debian bookworm (debootstrap) + CPython $version"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap-$version.log"
    # the interpreter, its shared library, headers and standard library; not what pyenv's site-packages holds
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib" "$rootfs/usr/local/include"
    cp -a "$prefix/bin/python$short" "$rootfs/usr/local/bin/"
    cp -a "$prefix/include/python$short" "$rootfs/usr/local/include/"   # headers: packages built from source
    cp -a "$prefix"/lib/libpython"$short"*.so* "$rootfs/usr/local/lib/"
    tar -C "$prefix/lib" --exclude="python$short/site-packages/*" --exclude='__pycache__' -cf - "python$short" \
        | tar -C "$rootfs/usr/local/lib" -xf -
    ln -sf "python$short" "$rootfs/usr/local/bin/python3"
    ln -sf python3 "$rootfs/usr/local/bin/python"
    chroot "$rootfs" /sbin/ldconfig
    chroot "$rootfs" /usr/local/bin/python3 -m ensurepip --default-pip > /dev/null 2>&1
    ln -sf "pip$short" "$rootfs/usr/local/bin/pip"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    chroot "$rootfs" /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, bz2, lzma, zlib, uuid; print("CPython ok")'
    tar -C "$rootfs" -c . | podman import -q --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" > /dev/null
    rm -rf "$rootfs"
}

mkdir -p "$WORK"
apt_install podman buildah debootstrap crun fuse-overlayfs
base_image 3.11.7
base_image 3.13.0
# pip inside the build: PyPI through this machine's certificate authorities (its network may
# inspect TLS), and this machine's wheel folders (torch and its CUDA runtime)
cat > "$WORK/pip.conf" <<EOF
[global]
cert = /etc/pip-ca-certificates.crt
find-links = /opt/wheels
extra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple
EOF
volumes=(--volume "$WORK/pip.conf:/etc/pip.conf:ro"
         --volume "/etc/ssl/certs/ca-certificates.crt:/etc/pip-ca-certificates.crt:ro")
for dir in /opt/wheels /opt/pypi /opt/pypi-more; do
    [ -d "$dir" ] && volumes+=(--volume "$dir:$dir:ro")
done
log "$IMAGE: podman build of containers/Dockerfile, target $TARGET"
podman build --isolation chroot --network host --ulimit nofile=20000:20000 --target "$TARGET" \
    --build-arg PYTHON_IMAGE=localhost/python:3.11.7-slim-bookworm \
    --build-arg VALIDATOR_PYTHON_IMAGE=localhost/python:3.13.0-slim-bookworm \
    "${volumes[@]}" -f containers/Dockerfile -t "$IMAGE" . > "$WORK/build-$TARGET.log" 2>&1 \
    || { tail -30 "$WORK/build-$TARGET.log"; log "the build failed; its log is $WORK/build-$TARGET.log"; exit 1; }
log "$IMAGE built: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f GB", $1 / 1e9}')"
echo "$IMAGE"
