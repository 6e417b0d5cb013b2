#!/usr/bin/env bash
# Stages the file tree of the sirms image: the one description of what is in it, used by the
# Dockerfile's build stage and by docker/build.sh on the host, so both make the same image.
#
#   docker/stage.sh BIN STAGE
#
# STAGE/root (for COPY, owned by root): the binary, stripped, as /usr/local/bin/sirms, the CA
# bundle (SIRMS_CA_BUNDLE, default Debian's), passwd/group/nsswitch.conf for the sirms user
# (uid 10001, docker/stage-accounts.sh); STAGE/data (for COPY --chown=10001:10001): the empty
# data directory /var/lib/sirms and /tmp. Any earlier STAGE is removed first.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 BIN STAGE" >&2; exit 2; }
BIN=$1
STAGE=$2
CA=${SIRMS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# The Dockerfiles' USER and COPY --chown say 10001 too.
SIRMS_UID=10001

say() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=docker/stage-accounts.sh
. "$(dirname "$0")/stage-accounts.sh"

[[ -x $BIN ]] || { say "no binary at $BIN"; exit 1; }
if readelf -l "$BIN" 2>/dev/null | grep -q 'INTERP'; then
    say "$BIN is dynamically linked (it has a program interpreter); it would not run FROM scratch"
    exit 1
fi
[[ -r $CA ]] || { say "no CA bundle at $CA (Debian: apt-get install ca-certificates)"; exit 1; }

say "staging the image root in $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE/root/usr/local/bin" "$STAGE/root/etc/ssl/certs" "$STAGE/data/var/lib/sirms" "$STAGE/data/tmp"
cp "$BIN" "$STAGE/root/usr/local/bin/sirms"
strip "$STAGE/root/usr/local/bin/sirms" 2>/dev/null || true
cp "$CA" "$STAGE/root/etc/ssl/certs/ca-certificates.crt"
stage_accounts "$STAGE/root" sirms "$SIRMS_UID" /var/lib/sirms
# The modes are part of the image: COPY keeps them.
chmod 0755 "$STAGE/root" "$STAGE/root/usr" "$STAGE/root/usr/local" "$STAGE/root/usr/local/bin" \
    "$STAGE/root/etc" "$STAGE/root/etc/ssl" "$STAGE/root/etc/ssl/certs" \
    "$STAGE/data" "$STAGE/data/var" "$STAGE/data/var/lib"
chmod 0755 "$STAGE/root/usr/local/bin/sirms"
chmod 0644 "$STAGE/root/etc/ssl/certs/ca-certificates.crt"
chmod 0750 "$STAGE/data/var/lib/sirms"
chmod 1777 "$STAGE/data/tmp"
