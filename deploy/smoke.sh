#!/usr/bin/env bash
# Smoke test of the container image: build it, run it (read-only root, no capabilities), wait for
# /health, send a sentiment request (labels checked on the shipped model) and a translation request
# per pair (non-empty, in the target language's script and words: deploy/smoke_check.py), speak the
# Open Inference Protocol to every model over HTTP (/v2, from the host) and over gRPC (from inside the
# container, with the image's python and tritonclient), each answer compared with /v1's
# (deploy/smoke_oip.py), check /metrics counts all three protocols, check it runs as non-root, that
# Docker's HEALTHCHECK turns healthy and that it stops cleanly on SIGTERM, remove it.
# Before the run, `python -m service.verify` checks every model in the image (hashes, golden outputs).
# Prints the image size, the build time, the start-up time and the memory in use.
#
# PLATFORM=linux/arm64 builds and runs the image for another architecture from the same Dockerfile:
# BASE_IMAGE must then be a base of that architecture (deploy/base-image.sh arm64), and a foreign one
# runs under qemu-user through binfmt_misc (deploy/qemu-binfmt.sh), every waiting time multiplied by SLOW (default 10
# when emulated, else 1). `make smoke-arm64` does it (docs/deploy.md, arm64).
#
#   deploy/smoke.sh                                   # models/ of this repo, python:3.11-slim base
#   BASE_IMAGE=local/python:3.11-bookworm MODELS=/tmp/tiny-models PORT=18080 deploy/smoke.sh
#
# Environment: BASE_IMAGE (default: the Dockerfile's), MODELS (folder of artifacts, default
# models/), IMAGE (tag, default rnn-serve:smoke), PORT (default 18080), GRPC_PORT (the server's gRPC port,
# default PORT+1), DOCKER (default docker), PLATFORM (e.g. linux/arm64; default: the engine's own),
# SLOW (factor on every timeout: start-up 120 s, requests 30-60 s, healthy 90 s, stop 30 s),
# QEMU_CPU (the CPU qemu emulates for verify and the server, e.g. neoverse-n1; default qemu's max,
# every feature at once: SVE2 and SME included),
# KEEP_IMAGE=1 to keep the image afterwards (it is kept by default; set KEEP_IMAGE=0 to remove it).
# The container uses host networking and binds 127.0.0.1 only (no bridge network is assumed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-rnn-serve:smoke}
MODELS=${MODELS:-$root/models}
PORT=${PORT:-18080}
GRPC_PORT=${GRPC_PORT:-$((PORT + 1))}  # on the host network: not the image's 8001, which a dev server may hold
KEEP_IMAGE=${KEEP_IMAGE:-1}
PLATFORM=${PLATFORM:-}
name=rnn-serve-smoke-$$
url=http://127.0.0.1:$PORT

say() { printf '[smoke] %s\n' "$*"; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }

# The platform's architecture, in Docker's words (amd64, arm64), and whether qemu has to run it.
engine_arch=$("$DOCKER" version -f '{{.Server.Arch}}' 2>/dev/null) || fail "no Docker engine answers ($DOCKER version)"
arch=${PLATFORM#*/}
arch=${arch%%/*}
arch=${arch:-$engine_arch}
platform_flag=()
[ -n "$PLATFORM" ] && platform_flag=(--platform "$PLATFORM")
if [ "$arch" != "$engine_arch" ]; then
  emulated=1
  "$root/deploy/qemu-binfmt.sh" --check "$arch" >/dev/null \
    || fail "linux/$arch on a $engine_arch engine needs a recent qemu registered with binfmt_misc: deploy/qemu-binfmt.sh $arch"
else
  emulated=0
fi
SLOW=${SLOW:-$([ "$emulated" = 1 ] && echo 10 || echo 1)}
qemu_env=()
[ "$emulated" = 1 ] && [ -n "${QEMU_CPU:-}" ] && qemu_env=(-e "QEMU_CPU=$QEMU_CPU")

compgen -G "$MODELS/*/metadata.json" >/dev/null \
  || fail "no model artifacts in $MODELS (expected sentiment/ or translate-xx-yy/ with metadata.json).
  Pass MODELS=DIR; tiny real artifacts come from the test fixtures, e.g.
  .venv/bin/python -m pytest -q tests/test_smoke_server.py --basetemp=/tmp/rnn-fixtures && MODELS=/tmp/rnn-fixtures/models0 $0"
# The shipped models' answers are checked for content (labels, target-language words); tiny test
# artifacts (MODELS=...) are too small to know either, and get the rest of the checks.
shipped=0 marks_flag=--no-marks shipped_flag=
if [ "$(cd "$MODELS" && pwd -P)" = "$(cd "$root/models" && pwd -P)" ]; then shipped=1 marks_flag= shipped_flag=--shipped; fi
if curl -fsS -m 2 "$url/health" >/dev/null 2>&1; then fail "something already answers on $url; choose another PORT"; fi

# A small build context: what the image needs and the chosen models (which may live outside the repo).
ctx=$(mktemp -d /tmp/rnn-serve-ctx.XXXX)
cleanup() {
  "$DOCKER" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$ctx"
  if [ "$KEEP_IMAGE" = 0 ]; then "$DOCKER" image rm -f "$IMAGE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
mkdir -p "$ctx/deploy"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/service" "$ctx/"
cp -r "$root/deploy/Dockerfile" "$root/deploy/requirements" "$ctx/deploy/"
cp -rL "$MODELS" "$ctx/models"
find "$ctx" -name __pycache__ -prune -exec rm -rf {} +

build_args=()
[ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
say "building $IMAGE for linux/$arch$([ "$emulated" = 1 ] && echo " (emulated${QEMU_CPU:+: $QEMU_CPU})") from ${BASE_IMAGE:-the default base} with models from $MODELS"
t0=$(now)
"$DOCKER" build --network host "${platform_flag[@]}" "${build_args[@]}" -f "$ctx/deploy/Dockerfile" -t "$IMAGE" "$ctx" >"$ctx/build.log" 2>&1 \
  || { tail -n 40 "$ctx/build.log" >&2; fail "docker build failed"; }
build_s=$(since "$t0")
size_bytes=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
size_mb=$(python3 -c "print(round($size_bytes / 1e6))")
image_arch=$("$DOCKER" image inspect -f '{{.Architecture}}' "$IMAGE")
[ "$image_arch" = "$arch" ] || fail "$IMAGE is linux/$image_arch, not linux/$arch (a base image of the wrong architecture?)"
say "built in ${build_s}s; image size ${size_mb} MB; linux/$image_arch"

# Every model the server would load, checked as it checks them (integrity and golden outputs), by
# the image's own python on this CPU (or emulated one); one line per model.
if "$DOCKER" run --rm "${platform_flag[@]}" --network none --entrypoint python "$IMAGE" -c "import service.verify" 2>/dev/null; then
  t1=$(now)
  out=$("$DOCKER" run --rm "${platform_flag[@]}" "${qemu_env[@]}" --network none --read-only --tmpfs /tmp --cap-drop ALL \
    --entrypoint python "$IMAGE" -m service.verify 2>&1) || { printf '%s\n' "$out" >&2; fail "python -m service.verify in the image"; }
  while IFS= read -r line; do say "verify: $line"; done <<<"$out"
  say "verified in $(since "$t1")s"
else
  say "SKIP verify: the image has no service.verify"
fi

t0=$(now)
# As locked down as deploy/k8s runs it: read-only root filesystem with a writable /tmp, no capabilities.
# Under emulation Docker's probe (a python start) gets more time than the Dockerfile's 4 s.
health_flags=()
[ "$SLOW" != 1 ] && health_flags=(--health-timeout "$((4 * SLOW))s" --health-start-period "$((60 * SLOW))s")
"$DOCKER" run -d --name "$name" "${platform_flag[@]}" "${qemu_env[@]}" "${health_flags[@]}" --network host --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges -e RNNSERVE_PORT="$PORT" -e RNNSERVE_GRPC_PORT="$GRPC_PORT" "$IMAGE" --host 127.0.0.1 --device cpu >/dev/null
ready=""
for _ in $(seq 1 $((600 * SLOW))); do
  if curl -fsS -m 2 "$url/health" >/dev/null 2>&1; then ready=$(since "$t0"); break; fi
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$name")" = true ] || { "$DOCKER" logs "$name" 2>&1 | tail -n 30 >&2; fail "container exited"; }
  sleep 0.2
done
[ -n "$ready" ] || { "$DOCKER" logs "$name" 2>&1 | tail -n 30 >&2; fail "/health not 200 within $((120 * SLOW)) s"; }
say "/health 200 after ${ready}s (container start to ready)"

uid=$("$DOCKER" exec "$name" id -u)
[ "$uid" != 0 ] || fail "the server runs as root"
say "runs as uid $uid"

body=$(curl -fsS -m $((30 * SLOW)) -H 'Content-Type: application/json' -H 'X-Request-ID: smoke-1' \
  -d '{"texts": ["One of the best films I have seen in years. The acting is superb.", "A dull, badly written mess. I want my two hours back."]}' \
  "$url/v1/sentiment") || fail "POST /v1/sentiment failed"
labels=$(json "' '.join(r['label'] for r in d['results'])" <<<"$body")
say "sentiment: $(json "[(r['label'], round(r['score'], 3)) for r in d['results']]" <<<"$body")"
if [ "$shipped" = 1 ] && [ "$labels" != "positive negative" ]; then fail "sentiment labels '$labels', not 'positive negative'"; fi

info=$(curl -fsS -m $((5 * SLOW)) "$url/info")
pairs=$(json "' '.join(d['translation_pairs'])" <<<"$info")
if [ -n "$pairs" ]; then
  source_text="A man is riding a bicycle down the street."
  for pair in $pairs; do
    body=$(curl -fsS -m $((60 * SLOW)) -H 'Content-Type: application/json' \
      -d "{\"texts\": [\"$source_text\"], \"source_lang\": \"${pair%-*}\", \"target_lang\": \"${pair#*-}\"}" \
      "$url/v1/translate") || fail "POST /v1/translate ($pair) failed"
    out=$(json "d['results'][0]['translation']" <<<"$body")
    say "translate $pair: $out"
    # Non-empty, Latin script, not an echo of the English, and (shipped models) the target language's words
    python3 "$root/deploy/smoke_check.py" $marks_flag "${pair#*-}" "$source_text" "$out" || fail "translate $pair: '$out'"
  done
else
  say "SKIP translate: the image holds no translation model"
fi

# The Open Inference Protocol (docs/oip.md), every model, each answer against /v1's for the same
# texts (deploy/smoke_oip.py says what it checks): the v2 routes over HTTP, JSON tensors, from here...
out=$(python3 "$root/deploy/smoke_oip.py" http "$url" $shipped_flag 2>&1) || { printf '%s\n' "$out" >&2; fail "the Open Inference Protocol over HTTP"; }
while IFS= read -r line; do say "$line"; done <<<"$out"
# ...and gRPC from inside the container, the script on stdin (the root filesystem is read-only), run
# by the image's python with its tritonclient.grpc: what a client next to the server sees.
out=$("$DOCKER" exec -i "$name" python - grpc "127.0.0.1:$GRPC_PORT" "$url" $shipped_flag <"$root/deploy/smoke_oip.py" 2>&1) \
  || { printf '%s\n' "$out" >&2; fail "the Open Inference Protocol over gRPC (127.0.0.1:$GRPC_PORT in the container)"; }
while IFS= read -r line; do say "$line"; done <<<"$out"

metrics=$(curl -fsS -m $((5 * SLOW)) "$url/metrics")
# Labels come sorted: endpoint, protocol (v1, v2, grpc, http), status.
for protocol in v1 v2 grpc; do
  n=$(grep "^rnnserve_requests_total{endpoint=\"sentiment\",protocol=\"$protocol\",status=\"200\"} " <<<"$metrics" | awk '{print $2}' || true)
  [ -n "$n" ] && [ "${n%.*}" -ge 1 ] || fail "/metrics lacks the sentiment request count over $protocol"
  counts="${counts:-}${counts:+, }$protocol $n"
done
say "/metrics: sentiment requests answered 200 by protocol: $counts"
grep -q '^rnnserve_batch_size_requests_bucket' <<<"$metrics" || fail "/metrics lacks the batch-size histogram"
say "/metrics ok ($(grep -c '^rnnserve_' <<<"$metrics") rnnserve_ samples)"
mem=$("$DOCKER" stats --no-stream --format '{{.MemUsage}}' "$name")
say "memory in use: $mem"

healthy=""
for _ in $(seq 1 $((90 * SLOW))); do
  status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$name")
  if [ "$status" = healthy ]; then healthy=$(since "$t0"); break; fi
  sleep 1
done
[ -n "$healthy" ] || fail "Docker HEALTHCHECK status is '$status', not healthy"
say "Docker HEALTHCHECK healthy after ${healthy}s"

t1=$(now)
"$DOCKER" stop -t $((30 * SLOW)) "$name" >/dev/null
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { "$DOCKER" logs "$name" 2>&1 | tail -n 20 >&2; fail "exit code $code after SIGTERM"; }
say "stopped on SIGTERM in $(since "$t1")s with exit code 0"

say "PASS image=$IMAGE platform=linux/$arch size=${size_mb}MB build=${build_s}s startup=${ready}s healthy=${healthy}s memory=${mem%% /*}"
