#!/usr/bin/env bash
# ARM64 check under qemu-user emulation: builds (or reuses) a Debian bookworm arm64 root filesystem,
# installs this checkout into a venv there and runs what matters on a Raspberry Pi / Jetson under
# QEMU_CPU=cortex-a72: the model reader/planner/protocol tests, `edgert verify` on small float and
# int8 models, outputs and wire frames compared with x86-64, and a daemon (`edgert serve`, `infer`,
# `status`, SIGTERM -> exit 0). Proves function, not speed: emulated timings say nothing about a board.
#
# Needs root and apt-get (installs qemu-user-static and debootstrap when missing). Idempotent: the
# root is built once under $EDGERT_ARM64_ROOT (default /var/tmp/edgert-arm64-root, outside the clone)
# and reused; delete it to start from scratch. Every mount it makes is removed on exit, failure included.
#
# Environment: EDGERT_ARM64_ROOT (root filesystem dir), EDGERT_ARM64_MIRROR (Debian mirror; default:
# the one the host's apt sources name), EDGERT_HOST_PYTHON (an x86-64 python with edgert installed;
# default: the clone's .venv, else python3), EDGERT_WAIT_HOST_PYTHON (seconds to wait for that python
# to have edgert installed, for a run started while the clone's .venv is being built; default 0).
# Exit status: 0 passed, 1 a check failed, 3 this machine cannot run the check (not root, no apt-get,
# host tools would not install, no binfmt_misc).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(realpath -m "${EDGERT_ARM64_ROOT:-/var/tmp/edgert-arm64-root}")  # canonical: compared with /proc paths
CPU=cortex-a72
CPUINFO=$REPO/tools/arm64/cpuinfo-$CPU.txt
SUITE=bookworm
APT_PACKAGES="python3 python3-venv ca-certificates"
SRC=/opt/edgert/src            # paths inside the root
VENV=/opt/edgert/venv
X86=/opt/edgert/x86-reference
NUMBA_CACHE=/var/cache/edgert-arm64/numba
STAMPS=$ROOT/.edgert-arm64     # what has been built, so a re-run reuses it
CANNOT=3

SUMMARY=()
T_START=$(date +%s.%N)

log() { printf 'arm64-check: %s\n' "$*"; }
cannot() { log "cannot run here: $*"; exit "$CANNOT"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Run one named step in a subshell (so `set -e` holds inside it), time it, record PASS/FAIL.
step() {
    local name=$1 t0 rc
    shift
    printf '\n== arm64 step: %s\n' "$name"
    t0=$(date +%s.%N)
    set +e
    ( set -e; "$@" )
    rc=$?
    set -e
    local status=PASS
    [ "$rc" -eq 0 ] || status=FAIL
    SUMMARY+=("$(printf '%-4s %8s s  %s' "$status" "$(elapsed "$t0")" "$name")")
    printf -- '-- %s: %s (%s s)\n' "$name" "$status" "$(elapsed "$t0")"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq "$CANNOT" ] && { print_summary; exit "$CANNOT"; }
        print_summary
        exit 1
    fi
}

print_summary() {
    printf '\n== arm64 check summary (QEMU_CPU=%s, root %s)\n' "$CPU" "$ROOT"
    printf '%s\n' "${SUMMARY[@]}"
    printf 'total %s s\n' "$(elapsed "$T_START")"
}

# ---- mounts ------------------------------------------------------------------------------------

mounts_under_root() {  # deepest first
    awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

cleanup() {
    local rc=$? pid m
    # Processes still running inside our root (only ever ones this script started: the lock keeps
    # other runs out) would hold the mounts busy.
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && kill -KILL "$pid" 2>/dev/null || true
    done
    for m in $(mounts_under_root); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
    done
    if [ -n "$(mounts_under_root)" ]; then log "warning: mounts left under $ROOT"; fi
    exit "$rc"
}

mount_root() {
    mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/dev/pts"
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    mountpoint -q "$ROOT/sys" || mount --bind /sys "$ROOT/sys"
    mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
    # qemu-user shows the host's x86 /proc/cpuinfo to the guest, and LiteRT crashes in Interpreter()
    # on it; numba/LLVM read the CPU name and features from it too. Show a Pi 4's instead.
    if ! grep -q 'CPU part' "$ROOT/proc/cpuinfo" 2>/dev/null; then
        mount --bind "$CPUINFO" "$ROOT/proc/cpuinfo"
    fi
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mounts_under_root | sed 's/^/  mounted /'
}

# Run a command inside the root with a clean environment (no host PIP_*, no host paths).
in_root() {
    timeout --kill-after=30 "${IN_ROOT_TIMEOUT:-1800}" chroot "$ROOT" /usr/bin/env -i PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME=/root \
        LANG=C.UTF-8 TMPDIR=/tmp DEBIAN_FRONTEND=noninteractive QEMU_CPU="$CPU" NUMBA_CACHE_DIR="$NUMBA_CACHE" \
        PYTHONUNBUFFERED=1 "$@"
}

# ---- steps -------------------------------------------------------------------------------------

host_tools() {
    [ "$(id -u)" -eq 0 ] || exit "$CANNOT"
    command -v apt-get >/dev/null || exit "$CANNOT"
    if [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v debootstrap >/dev/null; then
        log "installing qemu-user-static and debootstrap on the host"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-user-static debootstrap; } \
            >/tmp/edgert-arm64-apt.log 2>&1 || { tail -20 /tmp/edgert-arm64-apt.log; exit "$CANNOT"; }
    fi
    /usr/bin/qemu-aarch64-static --version | head -1
    debootstrap --version
}

binfmt() {
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf dir=/proc/sys/fs/binfmt_misc
    [ -f "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" || exit "$CANNOT"
    if [ ! -f "$dir/qemu-aarch64" ]; then
        [ -f "$conf" ] || { log "$conf missing"; exit "$CANNOT"; }
        grep -v '^#' "$conf" | grep . | head -1 >"$dir/register" || exit "$CANNOT"
        log "registered qemu-aarch64 with binfmt_misc"
    fi
    cat "$dir/qemu-aarch64"
    # F (fix binary): the interpreter is opened at registration, so it works inside a chroot.
    grep -q '^enabled' "$dir/qemu-aarch64" || { log "qemu-aarch64 binfmt handler is disabled"; exit "$CANNOT"; }
    grep -q '^flags:.*F' "$dir/qemu-aarch64" || { log "qemu-aarch64 is registered without the F flag; chroot needs it"; exit "$CANNOT"; }
}

host_mirror() {
    local m
    m=$(grep -hE '^URIs:|^deb ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
    echo "${EDGERT_ARM64_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

debootstrap_root() {
    if [ -f "$STAMPS/debootstrap.done" ]; then
        log "reusing $ROOT (debootstrap done $(cat "$STAMPS/debootstrap.done"))"
        return 0
    fi
    # A half-built root from an interrupted run: start over (never with anything mounted in it).
    [ -z "$(mounts_under_root)" ] || { log "mounts under $ROOT, refusing to delete it"; return 1; }
    rm -rf "$ROOT"
    local mirror
    mirror=$(host_mirror)
    log "debootstrap $SUITE arm64 from $mirror (first stage)"
    timeout 1800 debootstrap --arch=arm64 --foreign --variant=minbase "$SUITE" "$ROOT" "$mirror" >/tmp/edgert-arm64-debootstrap.log 2>&1 \
        || { tail -30 /tmp/edgert-arm64-debootstrap.log; return 1; }
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    log "second stage (emulated)"
    timeout 1800 chroot "$ROOT" /debootstrap/debootstrap --second-stage >>/tmp/edgert-arm64-debootstrap.log 2>&1 \
        || { tail -30 /tmp/edgert-arm64-debootstrap.log; return 1; }
    mkdir -p "$STAMPS"
    date -u +%FT%TZ >"$STAMPS/debootstrap.done"
}

apt_python() {
    local want
    want="$APT_PACKAGES $(sha256sum /usr/local/share/ca-certificates/*.crt 2>/dev/null | awk '{print $1}' | tr '\n' ' ')"
    if [ "$(cat "$STAMPS/apt.done" 2>/dev/null)" = "$want" ]; then
        log "reusing apt packages: $APT_PACKAGES"
    else
        in_root apt-get update -q >/tmp/edgert-arm64-apt-root.log 2>&1 \
            && in_root apt-get install -y -q --no-install-recommends $APT_PACKAGES >>/tmp/edgert-arm64-apt-root.log 2>&1 \
            || { tail -30 /tmp/edgert-arm64-apt-root.log; return 1; }
        in_root apt-get clean
        # pip verifies TLS against the root's CA store: add the CAs the host trusts beyond Debian's.
        if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
            mkdir -p "$ROOT/usr/local/share/ca-certificates"
            cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        fi
        in_root update-ca-certificates >/dev/null
        echo "$want" >"$STAMPS/apt.done"
    fi
    in_root python3 --version
}

copy_source() {
    # The checkout's files as git sees them (tracked plus untracked-not-ignored): what a fresh
    # clone would hold, without build output, venvs or caches. tar keeps mtimes, so numba's cache
    # stays valid for unchanged files.
    rm -rf "$ROOT$SRC"
    mkdir -p "$ROOT$SRC"
    # safe.directory: root runs git in a clone another user may own.
    (cd "$REPO" && git -c safe.directory="$REPO" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$ROOT$SRC"
    [ -f "$ROOT$SRC/pyproject.toml" ] || { log "nothing copied: is $REPO a git checkout?"; return 1; }
    log "copied $(find "$ROOT$SRC" -type f | wc -l) files ($(du -sh "$ROOT$SRC" | cut -f1)) to $SRC"
}

venv_install() {
    local want
    want=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)
    if [ "$(cat "$STAMPS/venv.done" 2>/dev/null)" = "$want" ] && in_root "$VENV/bin/python" -c 'import edgert' 2>/dev/null; then
        log "reusing venv $VENV (pyproject.toml unchanged)"
    else
        rm -rf "$ROOT$VENV"
        in_root python3 -m venv "$VENV"
        # aarch64 wheels only: a source build would hide a missing wheel (and take an hour emulated).
        in_root "$VENV/bin/pip" install -q --no-cache-dir --only-binary=:all: -e "$SRC[test]" \
            >/tmp/edgert-arm64-pip.log 2>&1 || { tail -30 /tmp/edgert-arm64-pip.log; return 1; }
        echo "$want" >"$STAMPS/venv.done"
    fi
    # The editable install maps the package to $SRC, which copy_source refills in place.
    in_root python -c "import edgert, sys; print('edgert from', edgert.__path__[0]); sys.exit(not edgert.__path__[0].startswith('$SRC'))"
    in_root "$VENV/bin/pip" list --format=freeze 2>/dev/null \
        | grep -iE '^(numpy|numba|llvmlite|pyzmq|psutil|ai-edge-litert|tflite|edgert)==' | tr '\n' ' '
    echo
}

host_python_ready() {
    [ -x "$1" ] || command -v "$1" >/dev/null || return 1
    (cd / && "$1" -c 'import numpy, numba, zmq, ai_edge_litert, edgert') 2>/dev/null
}

x86_reference() {
    local py=${EDGERT_HOST_PYTHON:-} waited=0 wait_max=${EDGERT_WAIT_HOST_PYTHON:-0}
    if [ -z "$py" ]; then
        if [ -x "$REPO/.venv/bin/python" ] || [ "$wait_max" -gt 0 ]; then py=$REPO/.venv/bin/python; else py=python3; fi
    fi
    # .ci/run starts this check while its own test command is still installing the clone's .venv.
    until host_python_ready "$py"; do
        [ "$waited" -lt "$wait_max" ] \
            || { log "$py lacks edgert's dependencies: set EDGERT_HOST_PYTHON to a python that has them"; return 1; }
        [ "$waited" -eq 0 ] && log "waiting up to ${wait_max} s for $py to have edgert installed"
        sleep 5
        waited=$((waited + 5))
    done
    log "x86-64 outputs with $py"
    # With its portable kernels (EDGERT_DOT_PRODUCT=0): a CPU with AVX512-VNNI otherwise runs int8
    # convs through dot-product kernels that need no scratch, and the arenas compared below would
    # differ by design. The int8 outputs are bit-identical either way.
    (cd "$REPO" && EDGERT_DOT_PRODUCT=0 "$py" tools/arm64/crosscheck.py x86-reference "$ROOT$X86")
}

pytest_subset() {
    local tests=() pattern t
    for pattern in "$@"; do  # globs expand in the copied source, wherever this script runs from
        while IFS= read -r t; do tests+=("$t"); done < <(cd "$ROOT$SRC" && compgen -G "$pattern" || true)
    done
    [ "${#tests[@]}" -gt 0 ] || { log "none of these tests exist: $*"; return 1; }
    log "tests: ${tests[*]}"
    in_root env -C "$SRC" python -m pytest -q -p no:cacheprovider "${tests[@]}"
}

numba_cache_report() {
    local n_index n_data
    n_index=$(find "$ROOT$NUMBA_CACHE" -name '*.nbi' 2>/dev/null | wc -l)
    n_data=$(find "$ROOT$NUMBA_CACHE" -name '*.nbc' 2>/dev/null | wc -l)
    log "numba cache $NUMBA_CACHE: $n_index index files, $n_data compiled objects, $(du -sh "$ROOT$NUMBA_CACHE" 2>/dev/null | cut -f1)"
    [ "$n_data" -gt 0 ]
}

main() {
    [ "$(id -u)" -eq 0 ] || cannot "needs root (debootstrap, chroot, mounts, binfmt_misc)"
    command -v apt-get >/dev/null || cannot "needs apt-get (Debian/Ubuntu host) for qemu-user-static and debootstrap"
    [ -f "$CPUINFO" ] || { log "missing $CPUINFO"; exit 1; }
    mkdir -p "$(dirname "$ROOT")"
    exec 9>"$ROOT.lock"
    flock -w 3600 9 || { log "another arm64 check holds $ROOT.lock"; exit 1; }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "root $ROOT, QEMU_CPU=$CPU, checkout $REPO"

    step "host tools (qemu-user-static, debootstrap)" host_tools
    step "binfmt_misc qemu-aarch64" binfmt
    step "root filesystem (debootstrap $SUITE arm64)" debootstrap_root
    step "mounts (proc, sys, dev, dev/pts, ARM cpuinfo)" mount_root
    step "python in the root (apt)" apt_python
    step "copy checkout" copy_source
    step "venv + pip --only-binary=:all:" venv_install
    step "x86-64 reference outputs" x86_reference
    step "aarch64 CPU, numba target, LiteRT start" in_root python "$SRC/tools/arm64/crosscheck.py" cpu
    step "pytest: model reader, planner, protocol" pytest_subset tests/test_model_reader.py \
        'tests/test_plan*.py' tests/test_protocol.py
    step "edgert verify (float, int8, stateful)" in_root python "$SRC/tools/arm64/crosscheck.py" verify "$X86"
    step "numba cache filled" numba_cache_report
    step "outputs and wire frames vs x86-64" in_root python "$SRC/tools/arm64/crosscheck.py" compare "$X86"
    step "pytest: against the x86-64 record" pytest_subset tests/test_crossarch.py
    step "daemon: warmup, serve, infer, status, SIGTERM" in_root python "$SRC/tools/arm64/crosscheck.py" serve "$X86"
    print_summary
    log "PASS"
}

# One line: bash has read it whole before running it, so editing this file mid-run is harmless.
main "$@"; exit $?
