#!/usr/bin/env bash
# Makes this Linux machine run another architecture's binaries (arm64 on x86-64, or amd64 on arm64)
# through qemu-user registered with binfmt_misc, as Docker needs for `--platform linux/ARCH`
# builds and containers (deploy/base-image.sh, make image-arm64, make smoke-arm64).
#
#   deploy/qemu-binfmt.sh [--check] ARCH      ARCH: arm64 or amd64
#
# The registered interpreter must be qemu QEMU_MIN (default 10) or newer, with the F flag (opened
# at registration, so it works inside containers). Older ones are not enough: under Debian 12's
# qemu 7.2 `import onnxruntime` dies with SIGSEGV while its cpuinfo probes the CPU (it reads the
# host's /sys CPU topology, then crashes), and `docker build` of deploy/Dockerfile fails at its
# import check; under qemu 10.0 it imports and runs. When none fits, this script takes qemu-user from Debian's
# bookworm-backports (apt-get download into its own lists, nothing installed or upgraded, so
# the system's qemu packages stay as they are), puts qemu-MACHINE under /opt/rnn-serve-qemu/,
# disables the other binfmt entries for that architecture and registers it (flags PF).
# --check changes nothing: it says what is registered and exits 1 when it does not fit.
# Needs root (to register); apt-get on Debian or Ubuntu (to fetch).
set -euo pipefail

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
ARCH=${1:?usage: $0 [--check] arm64|amd64}
QEMU_MIN=${QEMU_MIN:-10}
SUITE=${QEMU_SUITE:-bookworm-backports}
dir=/opt/rnn-serve-qemu
binfmt=/proc/sys/fs/binfmt_misc

say() { printf '[qemu-binfmt] %s\n' "$*"; }
fail() { printf '[qemu-binfmt] FAIL: %s\n' "$*" >&2; exit 1; }

# ELF header magic and mask of each architecture, as qemu's own scripts/qemu-binfmt-conf.sh has them.
case "$ARCH" in
  arm64 | aarch64)
    machine=aarch64
    magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  amd64 | x86_64)
    machine=x86_64
    magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00'
    mask='\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  *) fail "ARCH '$ARCH': arm64 or amd64" ;;
esac
[ "$(uname -m)" != "$machine" ] || { say "this machine is $machine: no emulation needed"; exit 0; }
hexmagic=$(printf '%s' "$magic" | sed 's/\\x//g; s/ELF/454c46/')

if [ ! -e "$binfmt/status" ]; then
  [ "$check" = 0 ] || fail "binfmt_misc is not mounted (mount binfmt_misc -t binfmt_misc $binfmt)"
  mount binfmt_misc -t binfmt_misc "$binfmt" || fail "cannot mount binfmt_misc on $binfmt"
fi

# Major version of a qemu binary ("qemu-aarch64 version 10.0.2 (Debian ...)"), 0 when unknown.
qemu_major() {
  local bin
  bin=$(readlink -f "$1" 2>/dev/null) || { echo 0; return; }
  "$bin" --version 2>/dev/null | sed -n 's/.* version \([0-9]*\)\..*/\1/p' | head -n 1 | grep . || echo 0
}

# The enabled entries for this architecture: name, interpreter, flags.
entries() {
  local f
  for f in "$binfmt"/*; do
    [ -f "$f" ] && [ "$(basename "$f")" != status ] && [ "$(basename "$f")" != register ] || continue
    grep -qx enabled "$f" && grep -qx "magic $hexmagic" "$f" || continue
    printf '%s %s %s\n' "$(basename "$f")" "$(sed -n 's/^interpreter //p' "$f")" "$(sed -n 's/^flags: //p' "$f")"
  done
}

fits() {
  local name interp flags n=0 ok=1
  while read -r name interp flags; do
    n=$((n + 1))
    say "registered: $name -> $interp (qemu $(qemu_major "$interp"), flags $flags)"
    [[ "$flags" == *F* ]] && [ "$(qemu_major "$interp")" -ge "$QEMU_MIN" ] || ok=0
  done < <(entries)
  [ "$n" -ge 1 ] && [ "$ok" = 1 ]
}

if fits; then say "ok: $machine binaries run under qemu $QEMU_MIN+"; exit 0; fi
[ "$check" = 0 ] || fail "no qemu $QEMU_MIN+ with the F flag runs $machine binaries here: deploy/qemu-binfmt.sh $ARCH sets one up"
[ "$(id -u)" = 0 ] || fail "registering with binfmt_misc needs root"
command -v apt-get >/dev/null || fail "no apt-get: install qemu-user $QEMU_MIN+ and register it for $machine with the F flag"

bin="$dir/qemu-$machine"
if [ "$(qemu_major "$bin")" -lt "$QEMU_MIN" ]; then
  # Debian's qemu-user (static binaries since 10.0) from $SUITE, fetched with lists of its own.
  work=$(mktemp -d /tmp/rnn-serve-qemu.XXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb http://deb.debian.org/debian $SUITE main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Default-Release=$SUITE")
  say "fetching qemu-user from Debian $SUITE"
  apt-get "${apt_opts[@]}" update -qq >"$work/apt.log" 2>&1 || { tail -n 5 "$work/apt.log" >&2; fail "apt-get update ($SUITE)"; }
  (cd "$work" && apt-get "${apt_opts[@]}" download qemu-user >>"$work/apt.log" 2>&1) \
    || { tail -n 5 "$work/apt.log" >&2; fail "apt-get download qemu-user ($SUITE)"; }
  dpkg-deb -x "$work"/qemu-user_*.deb "$work/x"
  file_type=$(file -b "$work/x/usr/bin/qemu-$machine" 2>/dev/null || true)
  [[ "$file_type" != *dynamically* ]] || fail "qemu-user from $SUITE is not static ($file_type)"
  mkdir -p "$dir"
  install -m 0755 "$work/x/usr/bin/qemu-$machine" "$bin"
fi
[ "$(qemu_major "$bin")" -ge "$QEMU_MIN" ] || fail "$bin is not qemu $QEMU_MIN+"

# Ours replaces the others: disable them (echo 1 > $binfmt/NAME enables one again).
while read -r name _; do
  [ "$name" = "rnn-serve-qemu-$machine" ] && continue
  echo 0 >"$binfmt/$name"
  say "disabled $name"
done < <(entries)
[ -e "$binfmt/rnn-serve-qemu-$machine" ] && echo -1 >"$binfmt/rnn-serve-qemu-$machine"
printf ':rnn-serve-qemu-%s:M::%s:%s:%s:PF' "$machine" "$magic" "$mask" "$bin" >"$binfmt/register"
fits || fail "registered $bin, but it does not show as the enabled $machine interpreter"
say "ok: registered $bin ($("$bin" --version | head -n 1))"
