#!/usr/bin/env bash
# fetch-smtp-source.sh DEST_DIR
#
# Obtain Postfix's load generator `smtp-source` (and `smtp-sink`) on Debian 12
# WITHOUT installing or starting Postfix: `apt-get download postfix` + `dpkg -x`.
# No maintainer scripts run, no daemon, nothing under /etc or /usr is touched.
#
# stdout: exactly one line, the absolute path of a runnable smtp-source wrapper
#         (DEST_DIR/bin/smtp-source; DEST_DIR/bin/smtp-sink sits beside it).
# stderr: progress / diagnostics.
# Also writes DEST_DIR/env.sh (SMTP_SOURCE, SMTP_SINK, SMTP_SOURCE_LD_LIBRARY_PATH)
# for callers that want to exec the real ELF binaries themselves.
#
# Why a wrapper: the binaries link libpostfix-{global,util}.so, which Postfix
# keeps privately in /usr/lib/postfix (RUNPATH=/usr/lib/postfix). Unpacked
# elsewhere, they need LD_LIBRARY_PATH=DEST/root/usr/lib/postfix (which also
# overrides a system Postfix's copies, as LD_LIBRARY_PATH is searched before
# RUNPATH).
#
# Environment knobs:
#   POSTFIX_VERSION=3.7.11-0+deb12u1   pin a version (must still be on the mirror)
#   BUNDLE_LIBS=1                      also unpack every shared-lib dependency
#                                      into DEST (self-contained tree), even if
#                                      the system has them
#   APT_OPTS="-o Dir::State::Lists=…"  extra options for apt-get/apt-cache (tests)
#   FORCE=1                            ignore the stamp and fetch again
#
# Exit codes: 0 ok; 2 usage; 3 no apt/dpkg; 4 apt lists missing and not root;
#             5 download failed (network/mirror); 6 unresolved shared libraries.
set -euo pipefail

log() { printf 'fetch-smtp-source: %s\n' "$*" >&2; }
die() { local rc=$1; shift; log "ERROR: $*"; exit "$rc"; }

[ $# -eq 1 ] || { echo "usage: $0 DEST_DIR" >&2; exit 2; }
mkdir -p "$1"
DEST=$(cd "$1" && pwd)
ROOT=$DEST/root
BIN=$DEST/bin
STAMP=$DEST/.fetched
read -r -a APT_EXTRA <<<"${APT_OPTS:-}"

lib_path() {
    # private postfix libs first, then any bundled multiarch libs
    local p="$ROOT/usr/lib/postfix" d
    for d in "$ROOT"/usr/lib/*-linux-gnu "$ROOT"/lib/*-linux-gnu; do
        [ -d "$d" ] && p="$p:$d"
    done
    printf '%s' "$p"
}

missing_libs() {
    # sonames that the dynamic loader cannot resolve for the two binaries
    local f
    for f in "$ROOT/usr/sbin/smtp-source" "$ROOT/usr/sbin/smtp-sink"; do
        LD_LIBRARY_PATH="$(lib_path)" ldd "$f" 2>/dev/null | awk '/=> not found/ {print $1}'
    done | sort -u
}

# ---- fast path: already fetched and still loadable -------------------------
if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ -x "$BIN/smtp-source" ] \
   && [ -x "$ROOT/usr/sbin/smtp-source" ] && [ -z "$(missing_libs)" ]; then
    log "already present: $(cat "$STAMP")"
    printf '%s\n' "$BIN/smtp-source"
    exit 0
fi

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die 3 "apt-get/dpkg-deb not found: this script needs a Debian-based system"
fi

IS_ROOT=0; [ "$(id -u)" -eq 0 ] && IS_ROOT=1
APT_DL=(apt-get -q "${APT_EXTRA[@]}")
# as root, apt drops privileges to _apt for downloads and warns when _apt
# cannot write the target dir; downloading as root is fine for a .deb we only unpack
[ $IS_ROOT = 1 ] && APT_DL+=(-o APT::Sandbox::User=root)

candidate() {  # candidate version of package $1 from the apt lists, or empty
    apt-cache "${APT_EXTRA[@]}" policy "$1" 2>/dev/null \
        | awk '/Candidate:/ {print $2}' | grep -v '^(none)$' || true
}

apt_update() {
    [ $IS_ROOT = 1 ] || die 4 "apt package lists are missing or stale and 'apt-get update' needs root.
  Run 'sudo apt-get update' once, then re-run this script as any user
  ('apt-get download' itself does not need root: it only writes to the current directory)."
    log "running apt-get update"
    local out rc
    set +e
    out=$(apt-get -q "${APT_EXTRA[@]}" update 2>&1); rc=$?
    set -e
    printf '%s\n' "$out" | sed 's/^/  apt: /' >&2
    # apt-get update exits 0 when it merely cannot reach a mirror (W: Failed to fetch)
    if [ $rc -ne 0 ] || printf '%s' "$out" | grep -qE '^(W|E): Failed to fetch'; then
        UPDATE_FAILED=1
        log "warning: 'apt-get update' could not fetch some indexes (no network / mirror down?)"
    fi
}
UPDATE_FAILED=0

# download_debs DIR PKG... : apt-get download with one 'apt-get update' retry
# (lists missing, or stale lists pointing at a .deb removed from the mirror)
download_debs() {
    local dir=$1; shift
    local out rc
    set +e
    out=$(cd "$dir" && "${APT_DL[@]}" download "$@" 2>&1); rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        printf '%s\n' "$out" | sed 's/^/  apt: /' >&2
        if printf '%s' "$out" | grep -qiE 'Temporary failure resolving|Could not resolve|Could not connect|Network is unreachable|Connection failed|Unable to connect'; then
            die 5 "cannot reach the Debian archive (no network?) while downloading: $*"
        fi
        log "download failed; refreshing apt lists and retrying once"
        apt_update
        set +e
        out=$(cd "$dir" && "${APT_DL[@]}" download "$@" 2>&1); rc=$?
        set -e
        [ $rc -eq 0 ] || { printf '%s\n' "$out" | sed 's/^/  apt: /' >&2
                           die 5 "apt-get download $* failed (see apt output above)"; }
    fi
}

# ---- 1. make sure apt knows about postfix ----------------------------------
PKG=postfix
if [ -n "${POSTFIX_VERSION:-}" ]; then PKG="postfix=$POSTFIX_VERSION"; fi
if [ -z "$(candidate postfix)" ]; then
    log "apt lists do not know 'postfix' (fresh image?)"
    apt_update
    if [ -z "$(candidate postfix)" ]; then
        [ $UPDATE_FAILED = 1 ] && die 5 "cannot reach the Debian archive (no network?): 'apt-get update' failed and no package list knows postfix"
        die 5 "after apt-get update, still no candidate for postfix (sources.list lacks Debian bookworm main?)"
    fi
fi

# ---- 2. download + unpack -----------------------------------------------------
DEBS=$DEST/debs
mkdir -p "$DEBS" "$ROOT" "$BIN"
rm -f "$DEBS"/postfix_*.deb
log "apt-get download $PKG"
download_debs "$DEBS" "$PKG"
DEB=$(ls "$DEBS"/postfix_*.deb | head -n1)
VERSION=$(dpkg-deb -f "$DEB" Version)
log "unpacking $(basename "$DEB") into $ROOT (dpkg -x: no scripts, no daemon)"
dpkg-deb -x "$DEB" "$ROOT"
[ -x "$ROOT/usr/sbin/smtp-source" ] || die 5 "smtp-source not found in $DEB"

# ---- 3. shared libraries --------------------------------------------------------
# soname -> Debian 12 package (everything smtp-source/smtp-sink can pull in,
# directly or via libpostfix-util.so; see `ldd`)
declare -A SONAME_PKG=(
    [libdb-5.3.so]=libdb5.3          [libnsl.so.2]=libnsl2
    [libicuuc.so.72]=libicu72        [libicudata.so.72]=libicu72
    [libtirpc.so.3]=libtirpc3        [libgssapi_krb5.so.2]=libgssapi-krb5-2
    [libkrb5.so.3]=libkrb5-3         [libk5crypto.so.3]=libk5crypto3
    [libkrb5support.so.0]=libkrb5support0 [libcom_err.so.2]=libcom-err2
    [libkeyutils.so.1]=libkeyutils1  [libstdc++.so.6]=libstdc++6
    [libgcc_s.so.1]=libgcc-s1        [libresolv.so.2]=libc6
    [libm.so.6]=libc6                [libc.so.6]=libc6
)
unpack_pkgs() {
    local p
    [ $# -gt 0 ] || return 0
    log "bundling shared-library packages into $ROOT: $*"
    download_debs "$DEBS" "$@"
    for p in "$@"; do dpkg-deb -x "$(ls "$DEBS"/"${p}"_*.deb | head -n1)" "$ROOT"; done
}
if [ -n "${BUNDLE_LIBS:-}" ]; then
    # libc6 deliberately excluded: always use the system's libc/loader
    unpack_pkgs libdb5.3 libnsl2 libicu72 libtirpc3 libgssapi-krb5-2 libkrb5-3 \
                libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
fi
for round in 1 2 3; do
    miss=$(missing_libs)
    [ -z "$miss" ] && break
    log "unresolved libraries (round $round): ${miss//$'\n'/ }"
    pkgs=()
    for so in $miss; do
        p=${SONAME_PKG[$so]:-}
        [ -n "$p" ] || die 6 "no package known for $so; install it (apt-get install <pkg>) or extend SONAME_PKG"
        [ "$p" = libc6 ] && die 6 "$so missing: the system libc is unusable?"
        pkgs+=("$p")
    done
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    unpack_pkgs "${pkgs[@]}"
done
miss=$(missing_libs)
[ -z "$miss" ] || die 6 "still unresolved: ${miss//$'\n'/ }"

# ---- 4. wrappers + env file -----------------------------------------------------
for prog in smtp-source smtp-sink; do
    cat >"$BIN/$prog" <<EOF
#!/bin/sh
# generated by fetch-smtp-source.sh (postfix $VERSION); relocatable
D=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="$(lib_path | sed "s#$DEST#\$D#g")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "\$D/root/usr/sbin/$prog" "\$@"
EOF
    chmod 755 "$BIN/$prog"
done
cat >"$DEST/env.sh" <<EOF
# source me: direct paths to the ELF binaries + the library path they need
export SMTP_SOURCE='$ROOT/usr/sbin/smtp-source'
export SMTP_SINK='$ROOT/usr/sbin/smtp-sink'
export SMTP_SOURCE_LD_LIBRARY_PATH='$(lib_path)'
EOF
echo "postfix $VERSION ($(date -u +%FT%TZ))" >"$STAMP"
log "ok: postfix $VERSION; binary $ROOT/usr/sbin/smtp-source (needs LD_LIBRARY_PATH=$(lib_path))"
printf '%s\n' "$BIN/smtp-source"
