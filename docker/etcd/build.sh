#!/usr/bin/env bash
# Builds the `sirms-etcd:latest` image FROM scratch out of the host's etcd.
#
# Debian's etcd-server gives /usr/bin/etcd (and etcd-client /usr/bin/etcdctl), dynamically
# linked. This stages each binary with every shared library `ldd` lists and its ELF
# interpreter, at the paths the binaries ask for, plus passwd/group for a non-root user and an
# empty data directory, in docker/etcd/stage/; docker/etcd/Dockerfile copies that in. No base
# image is pulled. The image runs the same etcd the integration tests run on the host.
#
#   docker/etcd/build.sh                          # stage + docker build
#   SIRMS_ETCD_IMAGE=sirms-etcd:dev docker/etcd/build.sh
#
# Needs: etcd-server and etcd-client (installed with apt when missing and we are root),
# binutils (readelf), docker.
set -euo pipefail

DIR=$(cd "$(dirname "$0")" && pwd)
IMAGE=${SIRMS_ETCD_IMAGE:-sirms-etcd:latest}
STAGE=$DIR/stage
ETCD_UID=10002
BINS=(/usr/bin/etcd /usr/bin/etcdctl)

say() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=docker/stage-accounts.sh
. "$DIR/../stage-accounts.sh"

if [[ ! -x /usr/bin/etcd || ! -x /usr/bin/etcdctl ]]; then
    say "no /usr/bin/etcd or /usr/bin/etcdctl: installing etcd-server etcd-client"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client ||
        { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client; }
fi

say "staging etcd and etcdctl with their libraries in $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE/root/usr/bin" "$STAGE/root/etc" "$STAGE/data/var/lib/etcd" "$STAGE/data/tmp"

# stage_file PATH: copies PATH (symlinks followed) to the same path under the stage root.
stage_file() {
    local path=$1
    [[ -e $STAGE/root$path ]] && return 0
    mkdir -p "$STAGE/root$(dirname "$path")"
    cp -L "$path" "$STAGE/root$path"
}

for bin in "${BINS[@]}"; do
    stage_file "$bin"
    # The interpreter, at the path written in the binary (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2.
    interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
    if [[ -n $interp ]]; then
        stage_file "$interp"
    fi
    # Every library ldd resolves ("name => /path (addr)"), and any listed by absolute path.
    while read -r lib; do
        stage_file "$lib"
    done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done

stage_accounts "$STAGE/root" etcd "$ETCD_UID" /var/lib/etcd
chmod -R u+rwX,go+rX,go-w "$STAGE/root"
chmod 0700 "$STAGE/data/var/lib/etcd"   # etcd wants its data directory private
chmod 1777 "$STAGE/data/tmp"
(cd "$STAGE/root" && find . -type f | sort | sed 's/^\./    /') >&2

say "docker build -t $IMAGE"
docker build -q -t "$IMAGE" "$DIR" >/dev/null

say "checking etcd and etcdctl run in the image"
# (Whole outputs captured, not piped to head: with pipefail an early-closed pipe fails the run.)
out=$(docker run --rm "$IMAGE" --version)
echo "${out%%$'\n'*}"
out=$(docker run --rm --entrypoint /usr/bin/etcdctl "$IMAGE" version)
echo "${out%%$'\n'*}"
