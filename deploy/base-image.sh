#!/usr/bin/env bash
# Builds a Debian bookworm base image with Python 3.11 (python3, venv, pip) for one CPU
# architecture, from Debian packages with debootstrap, for machines that cannot pull from Docker Hub.
# deploy/Dockerfile builds on it as BASE_IMAGE (make image-arm64, make smoke-arm64: docs/deploy.md).
#
#   deploy/base-image.sh [ARCH] [TAG]     ARCH: amd64 or arm64 (default: this machine's)
#                                         TAG: default local/python:3.11-bookworm-ARCH
#
# A foreign ARCH (arm64 on an x86-64 host) runs debootstrap's second stage, and later every RUN of
# a `docker build --platform linux/ARCH`, through qemu-user registered with binfmt_misc with the F
# flag (the interpreter is opened at registration, so it works inside chroots and containers):
# deploy/qemu-binfmt.sh ARCH sees to it first (qemu 10+; Debian 12's 7.2 cannot run onnxruntime). The image is
# loaded with its architecture in its config (docker load of a one-layer image), so Docker runs and
# builds on it as linux/ARCH. It trusts this machine's CA bundle, so pip inside `docker build --network host`
# reaches the package index as the host does.
#
# Needs root, debootstrap and a running Docker engine (and, for a foreign ARCH, apt-get or a qemu 10+):
#   apt-get install -y docker.io debootstrap
#   dockerd --bridge=none --iptables=false >/tmp/dockerd.log 2>&1 &
# Environment: DOCKER (default docker), SUITE (default bookworm), MIRROR (default: the Debian
# mirror this machine's apt uses), FORCE=1 to rebuild an existing TAG.
set -euo pipefail

host_arch=$(dpkg --print-architecture)
ARCH=${1:-$host_arch}
TAG=${2:-local/python:3.11-bookworm-$ARCH}
DOCKER=${DOCKER:-docker}
SUITE=${SUITE:-bookworm}
FORCE=${FORCE:-0}

say() { printf '[base-image] %s\n' "$*"; }
fail() { printf '[base-image] FAIL: %s\n' "$*" >&2; exit 1; }

# Debian architecture -> the kernel's machine name (qemu's binfmt entry, Python's platform.machine()).
case "$ARCH" in
  amd64) machine=x86_64 ;;
  arm64) machine=aarch64 ;;
  *) fail "ARCH '$ARCH': amd64 or arm64" ;;
esac

# A foreign architecture needs a recent qemu registered with binfmt_misc (deploy/qemu-binfmt.sh),
# for debootstrap and for every later build and run of the image.
if [ "$ARCH" != "$host_arch" ]; then
  "$(dirname "$0")/qemu-binfmt.sh" "$ARCH"
fi

if [ "$FORCE" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  have=$("$DOCKER" image inspect -f '{{.Architecture}}' "$TAG")
  [ "$have" = "$ARCH" ] || fail "$TAG exists but is $have, not $ARCH (FORCE=1 rebuilds it)"
  say "$TAG exists ($ARCH)"
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "debootstrap needs root"
command -v debootstrap >/dev/null || fail "no debootstrap: apt-get install -y debootstrap"

# The mirror this machine's apt already uses (debootstrap's own default where none is found).
# Only enabled source files (*.list, *.sources), only a Debian archive, never the security one.
MIRROR=${MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | grep -E '^(deb|URIs:)' | grep -oE 'https?://[^ ]+' | grep -v security | grep -E '/debian/?$' | head -n 1 || true)}

root=$(mktemp -d /tmp/base-rootfs-$ARCH.XXXX)
img=$(mktemp -d /tmp/base-image-$ARCH.XXXX)
log=/tmp/base-image-$ARCH.log
trap 'rm -rf "$root" "$img"' EXIT
say "debootstrap $SUITE $ARCH from ${MIRROR:-the default mirror} into $root (log: $log)"
t0=$(date +%s)
# For a foreign ARCH debootstrap unpacks, then runs the second stage in the chroot (through qemu).
debootstrap --arch="$ARCH" --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$root" $MIRROR >"$log" 2>&1 || { tail -n 20 "$log" >&2; fail "debootstrap failed"; }
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# The root filesystem as a one-layer image in `docker save`'s format, loaded with `docker load`.
# Not `docker import`: Docker 20.10 stamps an imported image with the engine's own architecture
# whatever --platform says, and `docker build --platform linux/arm64` then refuses or mislabels it.
tar -C "$root" --numeric-owner -cf "$img/layer.tar" .
python3 - "$img" "$ARCH" "$TAG" "$SUITE" <<'PY'
import datetime, hashlib, json, pathlib, sys

img, arch, tag, suite = pathlib.Path(sys.argv[1]), *sys.argv[2:]
h = hashlib.sha256()
with open(img / "layer.tar", "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
config = {
    "architecture": arch,
    **({"variant": "v8"} if arch == "arm64" else {}),
    "os": "linux",
    "created": now,
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/bin/bash"],
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]},
    "history": [{"created": now, "created_by": f"deploy/base-image.sh {arch}: debootstrap --variant=minbase {suite}"}],
}
raw = json.dumps(config, separators=(",", ":")).encode()
name = hashlib.sha256(raw).hexdigest() + ".json"
(img / name).write_bytes(raw)
(img / "manifest.json").write_text(json.dumps([{"Config": name, "RepoTags": [tag], "Layers": ["layer.tar"]}]))
PY
rm -rf "$root"
tar -C "$img" -c . | "$DOCKER" load >/dev/null

have=$("$DOCKER" image inspect -f '{{.Os}}/{{.Architecture}}' "$TAG")
[ "$have" = "linux/$ARCH" ] || fail "$TAG was loaded as $have, not linux/$ARCH"
ran=$("$DOCKER" run --rm --platform "linux/$ARCH" --network host "$TAG" \
  python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')
[ "${ran%% *}" = "$machine" ] || fail "python3 in $TAG says it runs on '${ran%% *}', not $machine"
size=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
say "built $TAG ($have, Python ${ran#* } on $machine) in $(($(date +%s) - t0)) s, $((size / 1000000)) MB"
