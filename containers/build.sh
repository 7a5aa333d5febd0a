#!/usr/bin/env bash
# Build the regmix-pipeline OCI image from requirements.lock and this checkout, with
# podman; optionally write it as an oci-archive and build an Apptainer .sif from that.
# Run from anywhere:
#
#   bash containers/build.sh [--base local|REF] [--torch-wheel FILE] [--tag TAG]
#                            [--oci-archive FILE] [--sif FILE] [--ca-bundle FILE]
#
#   --base REF         base image (default: the Containerfile's, the registry's python
#                      3.11 bookworm image pinned by tools/pin_base_image.py).
#   --base local       no registry reachable: make the base from Debian's packages
#                      (debootstrap bookworm + python3.11, `podman import`), once;
#                      later builds reuse localhost/regmix-base:bookworm.
#   --torch-wheel F    install this torch wheel instead of the index's torch==2.13.0
#                      (the CPU wheel for a test image; it must be version 2.13.0).
#   --tag TAG          default localhost/regmix-pipeline:<version from pyproject.toml>
#   --oci-archive F    also write the image as an oci-archive (what `apptainer build`
#                      reads, and what a cluster without podman can be given).
#   --sif F            also run `apptainer build F oci-archive://ARCHIVE` (needs
#                      apptainer; ARCHIVE is --oci-archive, or a temporary one).
#   --ca-bundle F      CA bundle for pip inside the build (a TLS-intercepting proxy).
#
# Needs podman (apt-get install -y podman runc; debootstrap for --base local).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_DIR/pyproject.toml" | head -1)
LOCAL_BASE=localhost/regmix-base:bookworm
# This machine's podman needs chroot isolation, the runc runtime and more open files
# than its default limit; they are harmless elsewhere.
PODMAN_RUN_FLAGS=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

base="" torch_wheel="" tag="localhost/regmix-pipeline:$VERSION" archive="" sif="" ca_bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=$2; shift 2 ;;
    --torch-wheel) torch_wheel=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --oci-archive) archive=$2; shift 2 ;;
    --sif) sif=$2; shift 2 ;;
    --ca-bundle) ca_bundle=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
command -v podman > /dev/null || die "podman not found: apt-get install -y podman runc"
if [ -n "$torch_wheel" ]; then
  [ -f "$torch_wheel" ] || die "--torch-wheel $torch_wheel: no such file"
  case "$(basename "$torch_wheel")" in
    torch-2.13.0-*|torch-2.13.0+*) ;;
    *) die "--torch-wheel $torch_wheel: the lock pins torch==2.13.0" ;;
  esac
fi
[ -z "$ca_bundle" ] || [ -f "$ca_bundle" ] || die "--ca-bundle $ca_bundle: no such file"
if [ -n "$sif" ]; then command -v apptainer > /dev/null || die "--sif needs apptainer on PATH"; fi

start=$(date +%s)

make_local_base() {
  command -v debootstrap > /dev/null || die "--base local needs debootstrap: apt-get install -y debootstrap"
  local root
  root=$(mktemp -d /var/tmp/regmix-base.XXXXXX)
  echo "build.sh: debootstrap bookworm into $root (a few minutes, once)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$root" http://deb.debian.org/debian > "$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --message "debootstrap bookworm minbase + python3" - "$LOCAL_BASE" > /dev/null
  rm -rf "$root" "$root.log"
}

if [ "$base" = local ]; then
  podman image exists "$LOCAL_BASE" || make_local_base
  base=$LOCAL_BASE
fi

# The build context holds only what the image is made of (not results/ or .snakemake/).
context=$(mktemp -d "${TMPDIR:-/tmp}/regmix-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/containers" "$context/wheels" "$context/certs"
cp "$REPO_DIR/pyproject.toml" "$REPO_DIR/requirements.lock" "$context/"
cp -r "$REPO_DIR/regmix" "$REPO_DIR/config" "$context/"
find "$context" -name __pycache__ -prune -exec rm -rf {} +
cp "$REPO_DIR/containers/verify_install.py" "$context/containers/"
[ -z "$torch_wheel" ] || cp "$torch_wheel" "$context/wheels/"
[ -z "$ca_bundle" ] || cp "$ca_bundle" "$context/certs/ca.pem"

build_args=()
[ -z "$base" ] || build_args+=(--build-arg "BASE=$base")
lock_sha=$(sha256sum "$REPO_DIR/requirements.lock" | cut -d' ' -f1)
torch_source="index torch==2.13.0"
[ -z "$torch_wheel" ] || torch_source=$(basename "$torch_wheel")
podman build --isolation=chroot "${PODMAN_RUN_FLAGS[@]}" --pull=never \
  "${build_args[@]}" \
  --label "io.regmix.lock-sha256=$lock_sha" \
  --label "io.regmix.base=${base:-containerfile default}" \
  --label "io.regmix.torch=$torch_source" \
  -f "$REPO_DIR/containers/Containerfile" -t "$tag" "$context"
built=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "build.sh: built $tag in $((built - start)) s, $((size / 1000000)) MB"

if [ -n "$sif" ] && [ -z "$archive" ]; then archive="$context/image.tar"; fi
if [ -n "$archive" ]; then
  mkdir -p "$(dirname "$archive")"
  rm -f "$archive"
  podman save --format oci-archive -o "$archive" "$tag"
  echo "build.sh: wrote $archive ($(( $(stat -c %s "$archive") / 1000000 )) MB) in $(( $(date +%s) - built )) s"
fi
if [ -n "$sif" ]; then
  mkdir -p "$(dirname "$sif")"
  rm -f "$sif"
  apptainer build "$sif" "oci-archive://$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")"
  echo "build.sh: wrote $sif"
fi
echo "build.sh: done in $(( $(date +%s) - start )) s"
