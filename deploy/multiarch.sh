#!/usr/bin/env bash
# One tag for every CPU: pushes the per-architecture images (make images: rnn-serve:amd64 and
# rnn-serve:arm64, both from deploy/Dockerfile) to a registry as REF-amd64 and REF-arm64, then a
# manifest list REF that names both, so `docker pull REF` (or a Kubernetes node) takes its own.
# What `docker buildx build --platform linux/amd64,linux/arm64 --push` does, for engines without
# buildx (Debian 12's docker.io).
#
#   deploy/multiarch.sh REGISTRY/REPO:TAG            e.g. deploy/multiarch.sh 127.0.0.1:5000/rnn-serve:0.1.0
#
# Environment: IMAGES (default "rnn-serve:amd64 rnn-serve:arm64"), DOCKER (default docker),
# INSECURE=1 for a registry over plain HTTP (docker manifest's --insecure; the engine itself
# already allows 127.0.0.0/8 over HTTP).
set -euo pipefail

ref=${1:?usage: $0 REGISTRY/REPO:TAG}
IMAGES=${IMAGES:-rnn-serve:amd64 rnn-serve:arm64}
DOCKER=${DOCKER:-docker}
insecure=()
[ "${INSECURE:-0}" = 1 ] && insecure=(--insecure)
[[ "${ref##*/}" == *:* ]] || { echo "[multiarch] FAIL: $ref has no :TAG" >&2; exit 1; }

say() { printf '[multiarch] %s\n' "$*"; }

parts=() arches=()
for img in $IMAGES; do
  arch=$("$DOCKER" image inspect -f '{{.Architecture}}' "$img")
  [ "$("$DOCKER" image inspect -f '{{.Os}}' "$img")" = linux ] || { say "FAIL: $img is not a linux image" >&2; exit 1; }
  case " ${arches[*]} " in *" $arch "*) say "FAIL: two images for $arch" >&2; exit 1 ;; esac
  "$DOCKER" tag "$img" "$ref-$arch"
  "$DOCKER" push -q "$ref-$arch" >/dev/null
  say "pushed $img as $ref-$arch (linux/$arch)"
  parts+=("$ref-$arch") arches+=("$arch")
done

"$DOCKER" manifest rm "$ref" >/dev/null 2>&1 || true
"$DOCKER" manifest create "${insecure[@]}" "$ref" "${parts[@]}" >/dev/null
for i in "${!parts[@]}"; do
  variant=()
  [ "${arches[$i]}" = arm64 ] && variant=(--variant v8)
  "$DOCKER" manifest annotate "$ref" "${parts[$i]}" --os linux --arch "${arches[$i]}" "${variant[@]}"
done
digest=$("$DOCKER" manifest push "${insecure[@]}" --purge "$ref")
platforms=$("$DOCKER" manifest inspect "${insecure[@]}" "$ref" | python3 -c "
import json, sys
m = json.load(sys.stdin)
print(' '.join(sorted(p['platform']['os'] + '/' + p['platform']['architecture'] for p in m['manifests'])))")
say "pushed $ref ($digest): $platforms"
