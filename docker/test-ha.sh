#!/usr/bin/env bash
# Fault tests of the HA compose cluster (docker-compose.ha.yml: 3 etcd members, 2 routers on
# one directory in etcd, 3 mail nodes, 1 storage node), each under light SMTP + IMAP load from
# client containers, asserting what the clients see:
#
#   up -> every source (60 addresses of a probe container) reaches the same node through
#   either router -> admin write latency, etcd (router1) vs a lone sled router -> load starts:
#   loadA (6 sources, tries router1 then router2, mail for alice), loadB (6 sources, router2
#   then router1, mail for bob) ->
#   1. kill the etcd leader: no client session fails, admin writes work; kill a second member
#      (no quorum): mail keeps flowing, no source moves, `sirms ctl users add` fails with "the
#      directory cannot be changed now" through both routers; start both again: the same
#      change goes through;
#   2. kill router1: loadA's clients go to router2 and reach the same node, loadB sees nothing;
#      failover time; router1 back;
#   3. cut node2 off the network (docker network disconnect): its sources are served elsewhere
#      within 2 s of its lease expiring (the lease key's DELETE, watched in etcd), no other
#      source moves (counted over 60), clients of other nodes see no failure; reconnected, it
#      gets its sources back;
#   4. freeze node3 (docker pause): the same;
#   then every message acknowledged with 250 is in its mailbox (read over IMAP); and
#   5. replicated mailboxes: 20 users r1..r20 added with --home node1 --replica node2 (in sync),
#      with their own load from a client container (rload: SMTP through both routers from 16
#      sources, 4 at a time, each message a unique Message-ID, every 250 logged; rflags: IMAP
#      STOREs of \Seen and a keyword, every OK logged):
#      a. node1 (the primary) killed: every user's home is node2 (time from the kill), first IMAP
#         read through the routers; on node2 over IMAP every acknowledged message exactly once,
#         UIDVALIDITY and the UIDs seen before the kill kept, every STORE answered OK there;
#      b. node1 started: in sync again (catch-up time); the two copies equal file by file on the
#         volumes (bytes, UID, flags, internal date, UIDVALIDITY of every folder), read by the
#         host through a container that mounts them read-only (the images have no shell);
#      c. node1, now the replica, killed under load: every delivery acknowledged, each user
#         written since marked out of sync; started: in sync again, copies equal;
#      d. node1 removed with its volume and started on an empty one, no write going on: its
#         copies are rebuilt (the node tells the directory they are out of sync), copies equal.
#
# Not covered: a partitioned primary (clients reach a node only through the routers, on the same
# network, so a cut-off node has no client to refuse), and a primary's volume lost (see
# docs/STORAGE.md, "Replication").
#
# The clients are containers of the sirms image running `sirms probe sleep`; extra source
# addresses are added to them with `ip addr`, and the host's python3 runs docker/mailcheck.py
# (and the sirms binary copied out of the image, for `sirms ctl`) inside their network
# namespaces with nsenter, so this needs root, python3, iproute2 and util-linux. Traffic goes
# only to the containers this script starts. Prints the figures and `docker-ha: N passed,
# M failed`; exits non-zero on any failure; always removes what it started (down -v).
#
#   docker/test-ha.sh                 # builds the sirms image first (docker/build.sh)
#   SIRMS_SKIP_BUILD=1 docker/test-ha.sh    # reuse sirms:latest (as .ci/run does after docker/test.sh)
#   SIRMS_KEEP=1 docker/test-ha.sh    # leave the cluster running afterwards
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-sirms-ha}
NET_PREFIX=10.203.78
R1=$NET_PREFIX.10
R2=$NET_PREFIX.11
SLED=$NET_PREFIX.12
declare -A NODE_IP=([node1]=$NET_PREFIX.21 [node2]=$NET_PREFIX.22 [node3]=$NET_PREFIX.23)
ETCD_ENDPOINTS=http://$NET_PREFIX.41:2379,http://$NET_PREFIX.42:2379,http://$NET_PREFIX.43:2379
ETCD_PREFIX=/sirms-ha
declare -A CLIENT_IP=([probe]=$NET_PREFIX.50 [loadA]=$NET_PREFIX.51 [loadB]=$NET_PREFIX.52 [rload]=$NET_PREFIX.53)
declare -A CLIENT_PID=()
# Extra source addresses: 60 for the probe container (the source counts), 6 per load client.
PROBE_SRCS=()
for i in $(seq 60 119); do PROBE_SRCS+=("$NET_PREFIX.$i"); done
declare -A LOAD_SRCS=([loadA]=$(seq -s, -f "$NET_PREFIX.%g" 130 135) [loadB]=$(seq -s, -f "$NET_PREFIX.%g" 140 145))
declare -A LOAD_USER=([loadA]=alice@example.test:alice-pw [loadB]=bob@example.test:bob-pw)
declare -A LOAD_ROUTERS=([loadA]=$R1,$R2 [loadB]=$R2,$R1)
# The replicated users (section 5), homed on node1 with a replica on node2, and their load's
# sources: 16 for SMTP (so that each node gets some), 2 for IMAP.
RUSERS=()
for i in $(seq 1 20); do RUSERS+=("r$i@example.test"); done
RLIST=$(IFS=,; echo "${RUSERS[*]}")
RPW=r-pw
R_SMTP_SRCS=$(seq -s, -f "$NET_PREFIX.%g" 150 165)
R_IMAP_SRCS=$(seq -s, -f "$NET_PREFIX.%g" 166 167)
LOAD_SRCS[rload]=$R_SMTP_SRCS,$R_IMAP_SRCS
TOKEN=$(sed -n 's/^token *= *"\(.*\)"/\1/p' docker/config/ha/router.toml)
MAILCHECK=(python3 "$ROOT/docker/mailcheck.py")
WORK=$(mktemp -d /tmp/sirms-test-ha.XXXXXX)
SIRMS=$WORK/sirms
STOP=$WORK/stop-load
PIDS=()
PASS=0
FAIL=0
T0=$(date +%s)

name_of() { echo "${COMPOSE_PROJECT_NAME}_$1"; }
say() { echo "docker-ha: $*" >&2; }
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$ROOT/docker-compose.ha.yml")
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose -f "$ROOT/docker-compose.ha.yml")
else
    say "neither 'docker compose' nor 'docker-compose' found"
    echo "docker-ha: 0 passed, 1 failed"
    exit 1
fi
if [[ $(id -u) -eq 0 ]]; then
    NSENTER=(nsenter)
elif sudo -n true 2>/dev/null; then
    NSENTER=(sudo -n --preserve-env=MAILCHECK_HOST,MAILCHECK_SOURCE nsenter)
else
    say "nsenter needs root (run as root or with passwordless sudo)"
    echo "docker-ha: 0 passed, 1 failed"
    exit 1
fi
for tool in python3 ip timeout; do
    command -v "$tool" >/dev/null || { say "$tool is missing"; echo "docker-ha: 0 passed, 1 failed"; exit 1; }
done

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { PASS=$((PASS + 1)); log "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); log "FAIL - $*"; }
compose() { "${COMPOSE[@]}" "$@"; }
now() { date +%s.%N; }
# secs FROM [TO]: TO - FROM in seconds, 2 decimals (TO defaults to now); ms: milliseconds.
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$1" "${2:-$(now)}"; }
ms() { python3 -c 'import sys; print(f"{(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.1f}")' "$1" "${2:-$(now)}"; }
# le A B: A <= B (decimal numbers).
le() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
FIGURES=()
figure() { FIGURES+=("$*"); log "figure: $*"; }

# Waits (bounded) until "$@" succeeds; $1 = seconds. Polls every half second.
wait_for() {
    local limit=$1 start
    shift
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) - start >= limit)); then return 1; fi
        sleep 0.5
    done
}

declare -A CID=()
cid() { [[ -n ${CID[$1]:-} ]] || CID[$1]=$(compose ps -q "$1" 2>/dev/null); echo "${CID[$1]}"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(cid "$1")" 2>/dev/null; }
healthy() { local s; for s in "$@"; do [[ $(health "$s") == healthy ]] || return 1; done; }

# inside CLIENT cmd...: runs a host command in a client container's network namespace.
inside() { local c=$1; shift; "${NSENTER[@]}" -t "${CLIENT_PID[$c]}" -n "$@"; }
# mc CLIENT ROUTERS mailcheck-args...: docker/mailcheck.py from CLIENT through ROUTERS
# (comma-separated, tried in order).
mc() { local c=$1 routers=$2; shift 2; MAILCHECK_HOST=$routers inside "$c" "${MAILCHECK[@]}" "$@"; }
# The admin's certificate (the cluster plane is mutual TLS), copied out of the cluster-tls volume.
TLS=$WORK/tls
ADMIN_TLS=(--ca "$TLS/ca.pem" --cert "$TLS/admin.pem" --key "$TLS/admin.key")
# ctl ROUTER args...: the image's sirms ctl, from the probe container, against ROUTER's API.
ctl() { local r=$1; shift; inside probe timeout 30 "$SIRMS" ctl --router "http://$r:7500" --token "$TOKEN" "${ADMIN_TLS[@]}" "$@" 2>&1; }
# ctl_in SERVICE args...: sirms ctl inside a router container (before the probe exists), with
# the admin's certificate from the volume every container mounts (a test cluster's shortcut).
ctl_in() {
    docker exec "$(cid "$1")" /usr/local/bin/sirms ctl --router http://127.0.0.1:7500 --token "$TOKEN" \
        --ca /tls/ca.pem --cert /tls/admin.pem --key /tls/admin.key "${@:2}" 2>&1
}
# The host's etcdctl (Debian's etcd-client), else the one staged for the etcd image.
ETCDCTL=$(command -v etcdctl || echo "$ROOT/docker/etcd/stage/root/usr/bin/etcdctl")
etcdctl_() { ETCDCTL_API=3 inside probe timeout 10 "$ETCDCTL" --endpoints "$ETCD_ENDPOINTS" --command-timeout=2s "$@"; }

nodes_up() { # nodes_up ROUTER: node1..3 up and active in ctl status through ROUTER
    local out n
    out=$(ctl "$1" status) || return 1
    for n in node1 node2 node3; do grep -Eq "^$n +[^ ]+ +[0-9]+ +up +active " <<<"$out" || return 1; done
}
node_up_in() { # node_up_in SERVICE NODE: NODE up through the router container SERVICE
    grep -Eq "^$2 +[^ ]+ +[0-9]+ +up +active " <<<"$(ctl_in "$1" status)"
}

# map ROUTERS FILE: `ROUTER SRC NODE` for each router and probe source, into FILE.
map() { mc probe "$1" greetmany 25 3 "${PROBE_SRCS[@]}" >"$2"; }
# same_everywhere FILE: every source greeted, and by the same node through every router.
same_everywhere() {
    python3 - "$1" <<'PY'
import sys
m = {}
for line in open(sys.argv[1]):
    router, src, node = line.split()
    m.setdefault(src, set()).add(node)
bad = {s: n for s, n in m.items() if "-" in n or len(n) != 1}
sys.exit(1 if bad or not m else 0)
PY
}
# by_source FILE: `SRC NODE` (the first router's answer for each source).
by_source() { awk '!seen[$2]++ { print $2, $3 }' "$1" | sort; }
# moved BEFORE AFTER NODE: compares two maps; prints "moved=N of_node=M total=T others_moved=K
# to_node=J missing=L" (of_node: sources NODE had before; others_moved: sources of other nodes
# that changed; to_node: sources that still or newly reach NODE; missing: no greeting).
moved() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
def load(path):
    m = {}
    for line in open(path):
        router, src, node = line.split()
        m.setdefault(src, set()).add(node)
    return m
before, after, x = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
b = {s: next(iter(n)) for s, n in before.items()}
moved = [s for s in b if after.get(s) != {b[s]}]
of_node = [s for s in b if b[s] == x]
others = [s for s in moved if b[s] != x]
to_node = [s for s, n in after.items() if x in n]
missing = [s for s, n in after.items() if "-" in n]
print(f"moved={len(moved)} of_node={len(of_node)} total={len(b)} others_moved={len(others)} "
      f"to_node={len(to_node)} missing={len(missing)}")
PY
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# loadstats SINCE [UNTIL]: the load clients' sessions that started in the window.
loadstats() { "${MAILCHECK[@]}" loadstats "$1" "${2:-$(now)}" "$WORK"/load-*.log; }
# failed_count STATS [REGEX]: failed sessions (of sources matching REGEX).
failed_count() { grep -E "^failed [^ ]+ ${2:-[^ ]+} " <<<"$1" | wc -l; }
acked_count() { sed -n 's/.* failed, \([0-9]*\) acknowledged.*/\1/p' <<<"$1"; }
session_count() { sed -n 's/^window \([0-9]*\) sessions, \([0-9]*\) ok.*/\2/p' <<<"$1"; }

remove_clients() {
    local c
    for c in probe loadA loadB rload vols router-sled impostor devtoken; do docker rm -fv "$(name_of "$c")" >/dev/null 2>&1; done
}

# kill_tree PID: PID and its descendants (our background jobs: subshell, nsenter, python).
kill_tree() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null
}

cleanup() {
    local rc=$? pid
    touch "$STOP"
    for pid in "${PIDS[@]}"; do kill_tree "$pid"; done
    if ((FAIL > 0)); then
        log "logs of the failed run (last 30 lines per service):"
        compose logs --no-color --tail=30 router1 router2 node1 node2 node3 etcd1 etcd2 etcd3 2>&1 | sed 's/^/    /'
    fi
    if ((${#FIGURES[@]} > 0)); then
        log "figures:"
        printf '    %s\n' "${FIGURES[@]}"
    fi
    if [[ -z ${SIRMS_KEEP:-} ]]; then
        log "removing the client containers; compose down -v"
        remove_clients
        compose down -v --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$WORK"
    else
        log "SIRMS_KEEP set: the cluster is still running (logs in $WORK; docker rm -fv" \
            "$(for c in probe loadA loadB rload vols router-sled; do printf '%s ' "$(name_of $c)"; done)" \
            "&& ${COMPOSE[*]} -p $COMPOSE_PROJECT_NAME down -v)"
    fi
    log "total $(($(date +%s) - T0)) s"
    echo "docker-ha: $PASS passed, $FAIL failed"
    if ((FAIL > 0 || rc != 0)); then exit 1; fi
    exit 0
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 1' INT TERM

# --- preflight and images -------------------------------------------------------------------
remove_clients
compose down -v --remove-orphans >/dev/null 2>&1 || true

if [[ -z ${SIRMS_SKIP_BUILD:-} ]]; then
    log "building the sirms image (docker/build.sh)"
    b0=$(date +%s)
    if docker/build.sh; then ok "sirms image built ($(($(date +%s) - b0)) s)"; else bad "docker/build.sh"; exit 1; fi
fi
if ! docker image inspect sirms:latest >/dev/null 2>&1; then bad "no sirms:latest image (run docker/build.sh)"; exit 1; fi
b0=$(date +%s)
if docker/etcd/build.sh >"$WORK/etcd-build.log" 2>&1 && etcd_version=$(docker run --rm sirms-etcd:latest --version) &&
    [[ $etcd_version == "etcd Version: "* ]]; then
    ok "sirms-etcd image built FROM scratch and etcd runs in it (${etcd_version%%$'\n'*}, $(($(date +%s) - b0)) s)"
else
    bad "docker/etcd/build.sh"; sed 's/^/    /' "$WORK/etcd-build.log"; exit 1
fi
# The image's own static sirms, for `sirms ctl` from the probe container's namespace.
c=$(docker create sirms:latest) && docker cp "$c:/usr/local/bin/sirms" "$SIRMS" >/dev/null && docker rm -v "$c" >/dev/null
if "$SIRMS" --version >/dev/null 2>&1; then ok "sirms copied out of the image ($("$SIRMS" --version))"; else bad "cannot copy sirms out of the image"; exit 1; fi

# --- up -------------------------------------------------------------------------------------
log "compose up -d (project $COMPOSE_PROJECT_NAME, ${COMPOSE[*]})"
u0=$(date +%s)
if timeout 300 "${COMPOSE[@]}" up -d >"$WORK/up.log" 2>&1; then
    ok "compose up -d: etcd x3, router x2, storage, node x3, init ($(($(date +%s) - u0)) s)"
else
    bad "compose up -d"; sed 's/^/    /' "$WORK/up.log"; exit 1
fi
SERVICES=(etcd1 etcd2 etcd3 router1 router2 storage1 node1 node2 node3)
if wait_for 120 healthy "${SERVICES[@]}"; then
    ok "every healthcheck passes ($(($(date +%s) - u0)) s after up)"
else
    bad "healthchecks: $(for s in "${SERVICES[@]}"; do printf '%s=%s ' "$s" "$(health "$s")"; done)"; exit 1
fi
mkdir -p "$TLS"
for f in ca.pem admin.pem admin.key node1.pem node1.key node2.pem node2.key; do
    docker cp "$(cid router1):/tls/$f" "$TLS/$f" >/dev/null 2>&1 || { bad "cannot copy $f out of the cluster-tls volume"; exit 1; }
done
ok "cluster CA and certificates made by the tls service; the admin's copied out for sirms ctl"
init_done() { local c; c=$(cid init); [[ -n $c && $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$c") == "exited 0" ]]; }
if wait_for 60 init_done; then ok "init: store1, example.test, alice and bob created through both routers"; else bad "init did not finish"; exit 1; fi
for r in router1 router2; do
    if wait_for 60 node_up_in "$r" node1 && wait_for 30 node_up_in "$r" node2 && wait_for 30 node_up_in "$r" node3; then
        ok "$r: node1, node2, node3 up and active"
    else
        bad "$r does not show the three nodes up"; ctl_in "$r" status | sed 's/^/    /'; exit 1
    fi
done
log "$(ctl_in router2 status | sed '2,$s/^/         /')"

# --- client containers ----------------------------------------------------------------------
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(cid router1)")
for c in probe loadA loadB rload; do
    if docker run -d --name "$(name_of "$c")" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network "$NET" \
        --ip "${CLIENT_IP[$c]}" sirms:latest probe sleep 3600 >/dev/null; then
        CLIENT_PID[$c]=$(docker inspect -f '{{.State.Pid}}' "$(name_of "$c")")
    else
        bad "could not start client container $c"; exit 1
    fi
done
added=0
for ip in "${PROBE_SRCS[@]}"; do inside probe ip addr add "$ip/32" dev eth0 && added=$((added + 1)); done
for c in loadA loadB rload; do
    for ip in ${LOAD_SRCS[$c]//,/ }; do inside "$c" ip addr add "$ip/32" dev eth0 && added=$((added + 1)); done
done
if ((added == ${#PROBE_SRCS[@]} + 12 + 18)); then
    ok "client containers: probe ${CLIENT_IP[probe]} + ${#PROBE_SRCS[@]} sources, loadA ${LOAD_SRCS[loadA]}, loadB ${LOAD_SRCS[loadB]}, rload .150-.167"
else
    bad "only $added extra source addresses added"; exit 1
fi
if docker run -d --name "$(name_of router-sled)" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network "$NET" --ip "$SLED" \
    --sysctl net.ipv4.ip_unprivileged_port_start=0 -v "$ROOT/docker/config/ha/router-sled.toml:/etc/sirms/router.toml:ro" \
    -v "${COMPOSE_PROJECT_NAME}_cluster-tls:/tls:ro" sirms:latest router -c /etc/sirms/router.toml >/dev/null && wait_for 30 ctl "$SLED" status; then
    ok "a lone sled router for comparison at $SLED"
else
    bad "sled router did not start"
fi

# --- baseline -------------------------------------------------------------------------------
BASE=$WORK/map-base
if wait_for 30 map "$R1,$R2" "$BASE" && same_everywhere "$BASE"; then
    used=$(by_source "$BASE" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
    ok "${#PROBE_SRCS[@]} sources greeted through both routers, each by the same node through either (${used%, })"
else
    bad "the routers do not route every source alike"; sed 's/^/    /' "$BASE" | head -20
fi
[[ $(by_source "$BASE" | awk '{print $2}' | sort -u | wc -l) == 3 ]] && ok "all three nodes have sources" || bad "not all nodes have sources"
tok=base$RANDOM$RANDOM
if mc probe "$R1" send 25 alice@example.test "$tok" >/dev/null &&
    wait_for 20 mc probe "$R2" imap 143 alice@example.test:alice-pw "$tok" --starttls --received-from "${CLIENT_IP[probe]}"; then
    ok "mail in through router1, read back over IMAP through router2 (Received: names the client's address)"
else
    bad "mail in through router1 / IMAP through router2"
fi

# --- the cluster plane holds every caller to its certificate ----------------------------------
# A container with node2's certificate and node1's id: its registration is refused, and node1
# keeps its place (a node cannot take another's traffic by registering as it).
sed -e 's/^node_id = .*/node_id = "node1"/' -e "s/^advertise_host = .*/advertise_host = \"$NET_PREFIX.24\"/" \
    docker/config/ha/node2.toml >"$WORK/impostor.toml"
impostor_refused() { docker logs "$(name_of impostor)" 2>&1 | grep -q "may not act as node node1"; }
if docker run -d --name "$(name_of impostor)" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network "$NET" \
    --ip "$NET_PREFIX.24" --sysctl net.ipv4.ip_unprivileged_port_start=0 \
    -v "$WORK/impostor.toml:/etc/sirms/node.toml:ro" -v "${COMPOSE_PROJECT_NAME}_cluster-tls:/tls:ro" \
    sirms:latest node -c /etc/sirms/node.toml >/dev/null && wait_for 20 impostor_refused &&
    grep -Eq "^node1 +${NODE_IP[node1]} " <<<"$(ctl "$R1" nodes list)"; then
    ok "node2's certificate registering as node1 is refused (\"may not act as node node1\"); node1 stays at ${NODE_IP[node1]}"
else
    bad "an impostor with node2's certificate"; docker logs "$(name_of impostor)" 2>&1 | tail -5 | sed 's/^/    /'
fi
docker rm -fv "$(name_of impostor)" >/dev/null 2>&1
# node1's Store API (mailboxes): a TLS client without a certificate gets no HTTP/2 at all; the
# same client with node2's certificate does (so the check can tell the two apart).
store1=${NODE_IP[node1]}:7401
no_cert=$(inside probe "${MAILCHECK[@]}" grpctls "$store1" "$TLS/ca.pem")
with_cert=$(inside probe "${MAILCHECK[@]}" grpctls "$store1" "$TLS/ca.pem" "$TLS/node2.pem" "$TLS/node2.key")
if [[ $no_cert == refused:* && $with_cert == h2 ]]; then
    ok "node1's Store API: refused to a client without a certificate ($no_cert), open to node2's"
else
    bad "node1's Store API without a certificate: '$no_cert'; with node2's: '$with_cert'"
fi
# The public dev token on a non-loopback address: a node and a router both refuse to start.
printf 'hostname = "dev.example.test"\n[cluster]\nrouters = ["http://%s:7500"]\nstore_listen = "0.0.0.0:7401"\n' "$R1" >"$WORK/devtoken.toml"
dev_node=$(timeout 30 docker run --rm --network "$NET" -v "$WORK/devtoken.toml:/etc/sirms/node.toml:ro" \
    sirms:latest node -c /etc/sirms/node.toml 2>&1)
dev_node_rc=$?
printf 'admin_listen = "0.0.0.0:7500"\n' >"$WORK/devtoken-router.toml"
dev_router=$(timeout 30 docker run --rm --network "$NET" -v "$WORK/devtoken-router.toml:/etc/sirms/router.toml:ro" \
    sirms:latest router -c /etc/sirms/router.toml 2>&1)
dev_router_rc=$?
if ((dev_node_rc != 0 && dev_node_rc != 124 && dev_router_rc != 0 && dev_router_rc != 124)) &&
    grep -q "default dev token" <<<"$dev_node" && grep -q "default dev token" <<<"$dev_router"; then
    ok "the dev token off loopback: a node and a router refuse to serve with it"
else
    bad "dev token off loopback: node rc=$dev_node_rc '$(tail -n1 <<<"$dev_node")', router rc=$dev_router_rc '$(tail -n1 <<<"$dev_router")'"
fi

# --- admin write latency: etcd (3 members, through router1) vs sled ---------------------------
# latency ROUTER TAG: 20 `domains add` + 20 `users add`, each timed from the client (process
# start to exit), and 20 `domains list` (a read: the cost of the ctl call itself); prints
# "domains min p50 p90 max, users ..., reads ..." in ms.
latency() {
    local r=$1 tag=$2 i t out
    : >"$WORK/lat-$tag"
    for i in $(seq 1 20); do
        t=$(now)
        out=$(ctl "$r" domains add "lat$i-$tag.test") || { log "    $out"; return 1; }
        echo "domains $(ms "$t")" >>"$WORK/lat-$tag"
    done
    for i in $(seq 1 20); do
        t=$(now)
        out=$(ctl "$r" domains list) || { log "    $out"; return 1; }
        echo "reads $(ms "$t")" >>"$WORK/lat-$tag"
    done
    for i in $(seq 1 20); do
        t=$(now)
        out=$(ctl "$r" users add "u$i@lat1-$tag.test" --password "pw$i" --home store1) || { log "    $out"; return 1; }
        echo "users $(ms "$t")" >>"$WORK/lat-$tag"
    done
    python3 - "$WORK/lat-$tag" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]):
    k, s = line.split()
    v.setdefault(k, []).append(float(s))
out = []
for k in ("domains", "users", "reads"):
    x = sorted(v[k])
    out.append(f"{k} min {x[0]:.0f} p50 {x[len(x) // 2]:.0f} p90 {x[int(len(x) * 0.9)]:.0f} max {x[-1]:.0f} ms")
print(", ".join(out))
PY
}
if ctl "$SLED" nodes add store1 "$NET_PREFIX.30" --storage-only --store "http://$NET_PREFIX.30:7400" >/dev/null; then
    if lat_sled=$(latency "$SLED" sled); then ok "admin writes on the sled router: $lat_sled"; figure "admin write latency, sled router (20 each, client-side): $lat_sled"; else bad "admin writes on the sled router"; fi
else
    bad "sled router: nodes add store1"
fi
if lat_etcd=$(latency "$R1" etcd); then ok "admin writes through router1, etcd x3: $lat_etcd"; figure "admin write latency, etcd x3 via router1 (20 each, client-side): $lat_etcd"; else bad "admin writes through router1 (etcd)"; fi
# `sirms ctl` returns once router1's copy has the change; router2's copy follows through its
# etcd watch, so a read through router2 may lag a little.
t=$(now)
seen=""
for _ in $(seq 1 100); do
    if grep -q "u20@lat1-etcd.test" <<<"$(ctl "$R2" users list)"; then seen=$(ms "$t"); break; fi
    sleep 0.05
done
if [[ -n $seen ]]; then
    ok "router2 lists the users added through router1 (${seen} ms after the last write returned)"
    figure "a write through router1 visible in a read through router2: ${seen} ms after ctl returned (watch lag; one read takes a ctl call)"
else
    bad "router2 does not see router1's writes within 5 s"
fi
docker rm -fv "$(name_of router-sled)" >/dev/null 2>&1

# --- load -----------------------------------------------------------------------------------
for c in loadA loadB; do
    MAILCHECK_HOST=${LOAD_ROUTERS[$c]} inside "$c" "${MAILCHECK[@]}" load 900 "$STOP" "$WORK/load-$c.log" \
        "${LOAD_USER[$c]}" "${LOAD_SRCS[$c]}" --name "$c" --timeout 5 --pause 0.2 >"$WORK/load-$c.out" 2>&1 &
    PIDS+=($!)
done
L0=$(now)
sleep 4
stats=$(loadstats "$L0")
if (($(session_count "$stats") > 10)) && (($(failed_count "$stats") == 0)); then
    ok "load running: $(head -n1 <<<"$stats")"
else
    bad "load: $(head -n1 <<<"$stats")"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
fi
# Each load source's node before any fault.
LOAD_BASE=$(grep '^source ' <<<"$stats")

# load_nodes_kept STATS [EXCEPT-NODE]: every load source reached the node it had before
# (sources whose node was EXCEPT-NODE may have gone elsewhere).
load_nodes_kept() {
    local src nodes before out=0
    while read -r _ src nodes _; do
        before=$(awk -v s="$src" '$2 == s { print $3 }' <<<"$LOAD_BASE")
        [[ -n ${2:-} && $before == "$2" ]] && continue
        if [[ $nodes != "$before" ]]; then log "    load source $src: $before before, now $nodes"; out=1; fi
    done < <(grep '^source ' <<<"$1")
    return $out
}
load_srcs_of() { awk -v n="$1" '$3 == n { print $2 }' <<<"$LOAD_BASE" | paste -sd'|'; }

# verify_mail: every delivery acknowledged so far is in alice's and bob's mailboxes.
verify_mail() {
    mc probe "$R2,$R1" verify alice@example.test:alice-pw "$WORK"/load-*.log &&
        mc probe "$R2,$R1" verify bob@example.test:bob-pw "$WORK"/load-*.log
}

# --- 1. etcd: one member, then quorum ---------------------------------------------------------
log "--- 1. etcd members"
leader=$(etcdctl_ endpoint status -w json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(next(e["Endpoint"] for e in s if e["Status"]["leader"] == e["Status"]["header"]["member_id"]))')
case $leader in
    *.41:2379) E1=etcd1; E2=etcd2 ;;
    *.42:2379) E1=etcd2; E2=etcd3 ;;
    *.43:2379) E1=etcd3; E2=etcd1 ;;
    *) bad "no etcd leader found ($leader)"; E1=etcd1; E2=etcd2 ;;
esac
t1=$(now)
docker kill "$(cid "$E1")" >/dev/null && log "killed $E1 (the leader)"
# At once, while the other two elect a new leader: the router retries over the members.
t=$(now)
if out=$(ctl "$R2" users add carol@example.test --password carol-pw --home store1); then
    took=$(secs "$t")
    ok "one etcd member down: users add carol through router2 right after the leader's death ($took s)"
    figure "admin write started right after the etcd leader was killed (an election under way): $took s"
else
    bad "users add with one etcd member down: $out"
fi
t=$(now)
if out=$(ctl "$R1" users add erin@example.test --password erin-pw --home store1); then
    ok "one etcd member down: users add erin through router1 ($(ms "$t") ms)"
else
    bad "users add with one etcd member down: $out"
fi
sleep 4
stats=$(loadstats "$t1")
if (($(failed_count "$stats") == 0)) && (($(acked_count "$stats") > 0)); then
    ok "one etcd member down: clients saw nothing ($(head -n1 <<<"$stats"))"
else
    bad "one etcd member down: $(head -n1 <<<"$stats")"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
fi
t2=$(now)
docker kill "$(cid "$E2")" >/dev/null && log "killed $E2: one member of three left, no quorum"
sleep 1
for r in "$R1" "$R2"; do
    t=$(now)
    if out=$(ctl "$r" users add dave@example.test --password dave-pw --home store1); then
        bad "users add succeeded through $r without etcd quorum"
    elif grep -q "cannot be changed now" <<<"$out"; then
        took=$(secs "$t")
        ok "no quorum: users add through $r fails in $took s: $(grep -o 'the directory cannot be changed now.*' <<<"$out" | cut -c1-110)"
        figure "admin write without etcd quorum fails after $took s (through $r)"
    else
        bad "users add without quorum through $r: unexpected error: $out"
    fi
done
sleep 3
MAP=$WORK/map-noquorum
stats=$(loadstats "$t2")
if (($(failed_count "$stats") == 0)) && (($(acked_count "$stats") > 0)); then
    ok "no quorum: mail keeps flowing from the routers' and nodes' copies ($(head -n1 <<<"$stats"))"
else
    bad "no quorum: $(head -n1 <<<"$stats")"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
fi
if map "$R1,$R2" "$MAP" && res=$(moved "$BASE" "$MAP" none) && [[ $(field moved "$res") == 0 && $(field missing "$res") == 0 ]]; then
    ok "no quorum: every source still reaches its node through both routers ($res)"
else
    bad "no quorum: sources moved or unanswered (${res:-})"
fi
t3=$(now)
docker start "$(cid "$E1")" "$(cid "$E2")" >/dev/null && log "started $E1 and $E2 again"
add_dave() { ctl "$R1" users add dave@example.test --password dave-pw --home store1; }
if wait_for 30 add_dave; then
    td=$(now)
    took=$(secs "$t3" "$td")
    ok "quorum back: the same users add goes through, no restart ($took s after docker start)"
    figure "etcd members started -> first admin write through: $took s"
else
    bad "users add still failing 30 s after quorum came back: $(add_dave)"
fi
# router2 follows etcd again on its own (its watch retries about every 2 s while etcd is away).
r2_has_dave() { grep -q dave@example.test <<<"$(ctl "$R2" users list)"; }
if wait_for 15 r2_has_dave; then
    took=$(secs "${td:-$t3}")
    ok "router2's copy has dave too ($took s after the write through router1 returned)"
    figure "after quorum returned: router2's copy showed the change made through router1 $took s after it returned (router2's etcd follower retries every ~2 s)"
else
    bad "router2 does not list dave 15 s after the change"
fi
if wait_for 60 healthy etcd1 etcd2 etcd3 && wait_for 30 nodes_up "$R1" && wait_for 30 nodes_up "$R2"; then
    ok "etcd healthy again, both routers show the three nodes up"
else
    bad "cluster not back after quorum returned"
fi
stats=$(loadstats "$t1")
if (($(failed_count "$stats") == 0)) && load_nodes_kept "$stats"; then
    ok "throughout the etcd faults: no client session failed, every load source kept its node ($(head -n1 <<<"$stats"))"
else
    bad "during the etcd faults: $(head -n1 <<<"$stats")"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
fi
if wait_for 20 verify_mail; then ok "acknowledged mail all in the mailboxes: $(verify_mail | paste -sd';')"; else bad "acknowledged mail missing: $(verify_mail | paste -sd';')"; fi

# --- 2. kill router1 --------------------------------------------------------------------------
log "--- 2. router kill"
BEFORE=$WORK/map-router-before
map "$R1,$R2" "$BEFORE"
tk=$(now)
docker kill "$(cid router1)" >/dev/null && log "killed router1"
first_via() { # first_via CLIENT ROUTER SINCE: when CLIENT first completed a session through ROUTER
    loadstats "$3" | awk -v c="$1" -v r="$2" '$1 == "first_ok_via" && $2 == c && $3 == r { print $4 }'
}
have_failed_over() { [[ -n $(first_via loadA "$R2" "$tk") ]]; }
wait_for 30 have_failed_over
fo=$(first_via loadA "$R2" "$tk")
if [[ -n $fo ]]; then
    took=$(secs "$tk" "$fo")
    ok "loadA (router1 first) completed a session through router2 $took s after the kill"
    figure "router failover: router1 killed -> first successful client session through router2: $took s (clients try router1 for 1 s, then router2)"
else
    bad "loadA never got through router2"
fi
sleep 5  # past the nodes' lease (3 s): their heartbeats moved to router2
AFTER=$WORK/map-router-after
if map "$R2" "$AFTER" && res=$(moved "$BEFORE" "$AFTER" none) && [[ $(field moved "$res") == 0 && $(field missing "$res") == 0 ]]; then
    ok "router1 dead: every source reaches the same node through router2 ($res)"
else
    bad "router1 dead: sources moved through router2 (${res:-})"
fi
if nodes_up "$R2"; then ok "router2 shows the three nodes up (their heartbeats moved to it)"; else bad "router2 lost nodes"; fi
stats=$(loadstats "$tk")
b_failed=$(grep -c '^failed loadB ' <<<"$stats")
if ((b_failed == 0)) && load_nodes_kept "$stats"; then
    ok "clients reconnect and reach the same node; loadB (router2 first) saw no failure ($(head -n1 <<<"$stats"))"
else
    bad "router kill: loadB failures $b_failed or load sources moved ($(head -n1 <<<"$stats"))"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
fi
docker start "$(cid router1)" >/dev/null
if wait_for 60 healthy router1 && wait_for 30 nodes_up "$R1" && map "$R1,$R2" "$WORK/map-router-back" && same_everywhere "$WORK/map-router-back" &&
    [[ $(field moved "$(moved "$BEFORE" "$WORK/map-router-back" none)") == 0 ]]; then
    ok "router1 back: both routers route every source as before"
else
    bad "router1 not back properly"
fi
if wait_for 20 verify_mail; then ok "no acknowledged mail lost: $(verify_mail | paste -sd';')"; else bad "acknowledged mail missing: $(verify_mail | paste -sd';')"; fi

# --- 3 and 4: a node cut off, a node frozen -----------------------------------------------------
# node_fault NAME NODE FAULT-CMD RESTORE-CMD: the lease test for one node.
node_fault() {
    local what=$1 x=$2 fault=$3 restore=$4 before after watch res stats tf te ts wpid xs
    log "--- $what $x"
    before=$WORK/map-$x-before
    after=$WORK/map-$x-after
    watch=$WORK/watch-$x
    map "$R1,$R2" "$before"
    mapfile -t xs < <(by_source "$before" | awk -v n="$x" '$2 == n { print $1 }')
    if ((${#xs[@]} == 0)); then bad "$x has no sources"; return; fi
    # The lease key's DELETE is when the lease expired.
    (etcd_watch() { ETCDCTL_API=3 inside probe timeout 60 "$ETCDCTL" --endpoints "$ETCD_ENDPOINTS" watch "$ETCD_PREFIX/members/$x"; }
     etcd_watch | while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done) >"$watch" 2>&1 &
    wpid=$!
    PIDS+=("$wpid")
    mc probe "$R1,$R2" watchmove "$x" 25 40 "${xs[@]}" >"$WORK/watchmove-$x" 2>&1 &
    local mpid=$!
    PIDS+=("$mpid")
    sleep 1.5
    tf=$(now)
    if ! eval "$fault"; then bad "$fault"; return; fi
    local tf1
    tf1=$(now)
    log "$fault"
    figure "$what $x: times below are from the start of the docker command, which took $(secs "$tf" "$tf1") s"
    wait "$mpid"
    ts=$(field served_elsewhere_at "$(cat "$WORK/watchmove-$x")")
    te=$(awk '$2 == "DELETE" { print $1; exit }' "$watch")
    if [[ -n $te ]]; then
        figure "$what $x: lease expired (members key deleted in etcd) $(secs "$tf" "$te") s after the fault"
    else
        bad "$what $x: no DELETE of $ETCD_PREFIX/members/$x seen in etcd"
    fi
    if [[ -n $ts ]]; then
        figure "$what $x: all ${#xs[@]} of its sources served elsewhere through both routers $(secs "$tf" "$ts") s after the fault"
        if [[ -n $te ]] && le "$(secs "$te" "$ts")" 2.0; then
            ok "$what $x: its sources are served elsewhere $(secs "$te" "$ts") s after its lease expired (limit 2 s)"
        else
            bad "$what $x: sources served elsewhere $(secs "${te:-$tf}" "$ts") s after the lease expired"
        fi
    else
        bad "$what $x: its sources were not served elsewhere: $(cat "$WORK/watchmove-$x")"
    fi
    if map "$R1,$R2" "$after" && res=$(moved "$before" "$after" "$x"); then
        if [[ $(field others_moved "$res") == 0 && $(field moved "$res") == "$(field of_node "$res")" &&
            $(field to_node "$res") == 0 && $(field missing "$res") == 0 ]] && same_everywhere "$after"; then
            ok "$what $x: only its sources moved ($res), alike through both routers"
        else
            bad "$what $x: $res"
        fi
        figure "$what $x: sources moved $(field moved "$res") of $(field total "$res") ($(python3 -c "import sys; print(f'{int(sys.argv[1]) / int(sys.argv[2]):.0%}')" "$(field moved "$res")" "$(field total "$res")")), all of them $x's; other nodes' sources moved: $(field others_moved "$res")"
    else
        bad "$what $x: no map after the fault"
    fi
    stats=$(loadstats "$tf")
    local xl others
    xl=$(load_srcs_of "$x")
    others=$(grep '^failed' <<<"$stats" | grep -Ev "^failed [^ ]+ (${xl:-NONE}) " | wc -l)
    if ((others == 0)) && load_nodes_kept "$stats" "$x"; then
        ok "$what $x: clients of the other nodes saw no failure and kept their node; $x's load sources ($(tr '|' ' ' <<<"${xl:-none}")) saw $(failed_count "$stats") failed sessions"
    else
        bad "$what $x: $others failed sessions from other nodes' sources, or they moved"; grep '^failed' <<<"$stats" | head -5 | sed 's/^/    /'
    fi
    if [[ -n $xl ]]; then
        local first
        first=$(awk -v n="$x" -v re="^(${xl})$" '$1 == "first_ok_on" && $2 ~ re && $3 != n { print $4 }' <<<"$stats" | sort -n | head -n1)
        [[ -n $first ]] && figure "$what $x: first successful load session of its sources on another node $(secs "$tf" "$first") s after the fault"
    fi
    local t_restore
    t_restore=$(now)
    eval "$restore"
    log "$restore"
    if wait_for 60 nodes_up "$R1" && wait_for 30 nodes_up "$R2" &&
        wait_for 30 eval 'map "$R1,$R2" "$WORK/map-$x-back" && [[ $(field moved "$(moved "$before" "$WORK/map-$x-back" none)") == 0 ]]'; then
        ok "$x restored: up on both routers and its sources back with it ($(secs "$t_restore") s)"
        figure "$what $x: restored -> its sources back on it: $(secs "$t_restore") s"
    else
        bad "$x not back after: $restore"
    fi
    kill_tree "$wpid"
}

node_fault "cut off the network:" node2 \
    'docker network disconnect "$NET" "$(cid node2)"' \
    'docker network connect --ip "${NODE_IP[node2]}" "$NET" "$(cid node2)"'
node_fault "frozen (docker pause):" node3 \
    'docker pause "$(cid node3)" >/dev/null' \
    'docker unpause "$(cid node3)" >/dev/null'

# --- the end: stop the load, every acknowledged delivery is in its mailbox -----------------------
touch "$STOP"
for pid in "${PIDS[@]:0:2}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
done
stats=$(loadstats "$L0")
log "load over the whole run: $(head -n1 <<<"$stats")"
figure "load over the whole run: $(head -n1 <<<"$stats")"
if wait_for 30 verify_mail; then
    ok "no acknowledged mail lost: $(verify_mail | paste -sd';')"
else
    bad "acknowledged mail missing: $(verify_mail | paste -sd';')"
fi

# --- 5. replicated mailboxes: the primary killed, brought back, the replica killed -------------
# RUSERS are homed on node1 with a replica on node2. Their own load (rload: SMTP from 16
# sources through both routers, 4 at a time, each message with its own Message-ID; rflags:
# IMAP sessions adding \Seen and a keyword, each STORE logged with whether it got OK) runs
# while node1 is killed; afterwards node2's copy is read over IMAP and held to the logs, and
# once node1 is back and caught up the two copies are compared file by file on the volumes.
log "--- 5. replicated mailboxes: ${#RUSERS[@]} users, home node1, replica node2"
RSTOP=$WORK/stop-rload
declare -a RLOAD_PIDS=()
# users_list: `sirms ctl users list` through whichever router answers.
users_list() { ctl "$R1" users list || ctl "$R2" users list; }
# r_count HOME REPLICA SYNC [LIST]: how many RUSERS have this home, replica and in_sync.
r_count() {
    local out=${4:-}
    [[ -n $out ]] || out=$(users_list) || { echo 0; return; }
    grep -cE "^r[0-9]+@example\.test home=$1 replica=$2 in_sync=$3 " <<<"$out"
}
r_all() { [[ $(r_count "$@") == "${#RUSERS[@]}" ]]; }
r_epochs() { users_list | sed -n 's/^r[0-9]*@example\.test .* epoch=\([0-9]*\).*/\1/p' | sort -u | paste -sd,; }
# wait_r SECONDS HOME REPLICA SYNC: polls `users list` (bounded) until every RUSER is so;
# prints when it was first seen.
wait_r() {
    local limit=$1 start
    shift
    start=$(date +%s)
    until r_all "$@"; do
        if (($(date +%s) - start >= limit)); then return 1; fi
        sleep 0.2
    done
    now
}
# The nodes' data volumes, read-only in a container of their own, read by the host through
# /proc/PID/root (the images have no shell to run anything in).
vols_up() {
    local n args=()
    docker rm -fv "$(name_of vols)" >/dev/null 2>&1
    for n in node1 node2 node3; do args+=(-v "${COMPOSE_PROJECT_NAME}_$n-data:/vol/$n:ro"); done
    docker run -d --name "$(name_of vols)" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network none "${args[@]}" \
        sirms:latest probe sleep 3600 >/dev/null && VOLS_PID=$(docker inspect -f '{{.State.Pid}}' "$(name_of vols)")
}
vol() { echo "/proc/$VOLS_PID/root/vol/$1"; }
# same_copies A B: the RUSERS' Maildirs on nodes A and B, file by file.
same_copies() { "${MAILCHECK[@]}" maildirs "$(vol "$1")" "$(vol "$2")" "${RUSERS[@]}"; }
# rload_start PHASE: the replicated users' load, logs in $WORK/r{load,flags}-PHASE.log.
rload_start() {
    rm -f "$RSTOP"
    MAILCHECK_HOST=$R1,$R2 inside rload "${MAILCHECK[@]}" rload 600 "$RSTOP" "$WORK/rload-$1.log" "$RLIST" \
        "$R_SMTP_SRCS" --threads 4 --timeout 30 --pause 0.05 --name "r$1" >"$WORK/rload-$1.out" 2>&1 &
    RLOAD_PIDS=($!)
    MAILCHECK_HOST=$R1,$R2 inside rload "${MAILCHECK[@]}" rflags 600 "$RSTOP" "$WORK/rflags-$1.log" "$RLIST" "$RPW" \
        "$R_IMAP_SRCS" --keyword "\$Replicated" --timeout 10 --pause 0.1 >"$WORK/rflags-$1.out" 2>&1 &
    RLOAD_PIDS+=($!)
    PIDS+=("${RLOAD_PIDS[@]}")
}
# rload_stop: bounded (the clients' sessions time out after 30 s).
rload_stop() {
    local pid
    touch "$RSTOP"
    for pid in "${RLOAD_PIDS[@]}"; do
        for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { log "    rload $pid still running: stopped"; kill_tree "$pid"; }
    done
}
# rstats LOG SINCE [UNTIL]: the SMTP sessions that started in the window: counts, reply codes,
# nodes, latency of the acknowledged ones.
rstats() {
    python3 - "$1" "$2" "${3:-$(now)}" <<'PY'
import json, sys
since, until = float(sys.argv[2]), float(sys.argv[3])
recs = []
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if since <= r["t0"] < until:
        recs.append(r)
acked = [r for r in recs if r.get("acked")]
codes, nodes = {}, {}
for r in recs:
    if not r.get("acked"):
        key = str(r.get("code") or (r.get("error") or "?").split(":")[0])
        codes[key] = codes.get(key, 0) + 1
    if r.get("node"):
        nodes[r["node"]] = nodes.get(r["node"], 0) + 1
lat = sorted(r["t1"] - r["t0"] for r in acked)
q = lambda p: f"{lat[min(len(lat) - 1, int(len(lat) * p))]:.2f}" if lat else "-"
print(f"sessions={len(recs)} acked={len(acked)} not_acked={len(recs) - len(acked)} "
      f"not_acked_by={','.join(f'{k}:{v}' for k, v in sorted(codes.items())) or '-'} "
      f"nodes={','.join(f'{k}:{v}' for k, v in sorted(nodes.items())) or '-'} "
      f"latency_s_p50={q(0.5)} p90={q(0.9)} max={q(1.0) if lat else '-'}")
PY
}
# flagstats LOG: STOREs logged, answered OK, failed.
flagstats() {
    python3 - "$1" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in recs if r.get("ok")]
print(f"stores={len(recs)} ok={len(ok)} messages_flagged={sum(len(r.get('uids', [])) for r in ok)} failed={len(recs) - len(ok)}")
PY
}
# rsnap FILE [HOST]: every RUSER's INBOX over IMAP, through the routers or straight to HOST.
rsnap() { MAILCHECK_HOST=${2:-$R1,$R2} inside rload "${MAILCHECK[@]}" rsnap "$RPW" "${RUSERS[@]}" >"$1"; }
# rverify BEFORE AFTER LOGS...: see mailcheck.py.
rverify() { "${MAILCHECK[@]}" rverify "$@"; }

provisioned=0
for u in "${RUSERS[@]}"; do
    out=$(ctl "$R1" users add "$u" --password "$RPW" --home node1 --replica node2) && provisioned=$((provisioned + 1)) ||
        log "    users add $u: $out"
done
card=$(ctl "$R2" users show "${RUSERS[0]}")
if ((provisioned == ${#RUSERS[@]})) && wait_r 10 node1 node2 yes >/dev/null &&
    grep -q "home     node1" <<<"$card" && grep -q "replica  node2" <<<"$card" && grep -q "in sync  yes" <<<"$card"; then
    ok "${#RUSERS[@]} users added through router1 with --home node1 --replica node2; router2 shows them in sync (epoch $(r_epochs))"
else
    bad "replicated users: $provisioned added; $(r_count node1 node2 yes) of ${#RUSERS[@]} home node1, replica node2, in sync: $card"
fi
if vols_up && [[ -d $(vol node1) && -d $(vol node2) ]]; then
    ok "the nodes' data volumes mounted read-only in $(name_of vols), read through /proc/$VOLS_PID/root"
else
    bad "cannot read the nodes' volumes"
fi

# -- 5a. node1 (the primary) killed under load ------------------------------------------------
log "--- 5a. kill the primary (node1) under load"
PA0=$(now)
rload_start a
sleep 8
st=$(rstats "$WORK/rload-a.log" "$PA0")
if (($(field acked "$st") > 20)) && [[ $(field not_acked "$st") == 0 ]]; then
    ok "replicated users' load running: $st"
else
    bad "replicated users' load before the kill: $st"; grep -h '"error"' "$WORK/rload-a.log" | head -3 | sed 's/^/    /'
fi
figure "replicated users' load before the kill (8 s): $st; IMAP flag changes: $(flagstats "$WORK/rflags-a.log")"
# Only an in-sync replica is promoted: a new user's first writes (its replica's mailboxes made
# again with the primary's UIDVALIDITYs) must not have left any behind.
if wait_r 20 node1 node2 yes >/dev/null; then
    ok "under load, every replicated user still in sync before the kill (epochs $(r_epochs))"
else
    bad "before the kill, under load: only $(r_count node1 node2 yes) of ${#RUSERS[@]} in sync: $(users_list | grep -E '^r[0-9]+@' | grep -v 'in_sync=yes' | head -3 | paste -sd';')"
fi
if rsnap "$WORK/rsnap-a-before"; then
    log "snapshot before the kill: $(python3 -c 'import json,sys; s=[json.loads(l) for l in open(sys.argv[1])]; print(sum(len(x["msgs"]) for x in s), "messages of", len(s), "users, served by", ",".join(sorted({x["node"] for x in s})))' "$WORK/rsnap-a-before")"
else
    bad "IMAP snapshot before the kill: $(head -c 300 "$WORK/rsnap-a-before")"
fi
TK=$(now)
docker kill "$(cid node1)" >/dev/null && log "killed node1 (SIGKILL)"
MAILCHECK_HOST=$R1,$R2 inside rload "${MAILCHECK[@]}" firstread "$RPW" "${RUSERS[0]}" 60 >"$WORK/firstread-a" 2>&1 &
FR_PID=$!
PIDS+=("$FR_PID")
if tp=$(wait_r 30 node2 node1 no); then
    took=$(secs "$TK" "$tp")
    ok "node1 killed: all ${#RUSERS[@]} users failed over to node2 (home node2, replica node1 out of sync, epoch $(r_epochs)) $took s after the kill"
    figure "primary killed -> every replicated user's home is node2 (ctl users list, polled): $took s"
else
    bad "failover to node2 not seen in 30 s: $(r_count node2 node1 no) of ${#RUSERS[@]}; $(users_list | grep -E '^r1@')"
    tp=$(now)
fi
for _ in $(seq 1 120); do kill -0 "$FR_PID" 2>/dev/null || break; sleep 0.5; done
fr=$(cat "$WORK/firstread-a")
if [[ -n $(field read_at "$fr") ]]; then
    took=$(secs "$TK" "$(field read_at "$fr")")
    ok "first IMAP read of ${RUSERS[0]} through the routers after the kill: $took s (served by $(field node "$fr"))"
    figure "primary killed -> first successful IMAP LOGIN+SELECT+FETCH through the routers: $took s"
else
    bad "no IMAP read after the kill: $fr"
fi
card=$(ctl "$R1" users show "${RUSERS[0]}")
if grep -q "home     node2" <<<"$card" && grep -q "replica  node1" <<<"$card" && grep -q "in sync  no" <<<"$card"; then
    ok "users show ${RUSERS[0]}: home node2, replica node1, in sync no"
else
    bad "users show ${RUSERS[0]} after the failover: $card"
fi
# Delivery goes on with the replica dead (each write tries it, then is acknowledged alone).
sleep 8
rload_stop
figure "replicated load, kill -> failover: $(rstats "$WORK/rload-a.log" "$TK" "$tp")"
st=$(rstats "$WORK/rload-a.log" "$tp")
figure "replicated load, failover -> stop (replica node1 dead): $st"
if (($(field acked "$st") > 0)); then
    ok "delivery goes on after the failover with the replica dead: $st"
else
    bad "no delivery acknowledged after the failover: $st"; grep -h '"error"' "$WORK/rload-a.log" | tail -3 | sed 's/^/    /'
fi
# Deliveries that could not reach node1 before the failover were spooled by the node that took
# them (250, delivered later, on a 10 s, 20 s, 40 s... back-off): flushed now, as an operator
# would after a failover. Then every acknowledged message must show up, each exactly once.
queued=$(ctl "$R1" queue list | grep -c "ra@sender\.test")
figure "primary killed: acknowledged deliveries waiting in the other nodes' spools when the load stopped: $queued"
ctl "$R1" queue flush >"$WORK/flush-a" || log "    queue flush: $(tr '\n' ';' <"$WORK/flush-a")"
r_settled() { rsnap "$WORK/rsnap-a-after" "${NODE_IP[node2]}" && rverify "$WORK/rsnap-a-before" "$WORK/rsnap-a-after" "$WORK"/rload-a.log "$WORK"/rflags-a.log; }
t=$(now)
if wait_for 90 r_settled; then
    res=$(rverify "$WORK/rsnap-a-before" "$WORK/rsnap-a-after" "$WORK"/rload-a.log "$WORK"/rflags-a.log | head -n1)
    ok "on node2 over IMAP: every acknowledged message once, UIDVALIDITY and UIDs kept, every flag change answered OK there ($(secs "$t") s after the load stopped): $res"
else
    res=$(rverify "$WORK/rsnap-a-before" "$WORK/rsnap-a-after" "$WORK"/rload-a.log "$WORK"/rflags-a.log)
    bad "node2's copy after the failover: $res"
fi
figure "primary killed, read on node2: $(head -n1 <<<"$res")"
if [[ $(field unacked_seen_gone "$res") != 0 ]]; then
    log "    seen over IMAP before the kill, never acknowledged, gone after it: $(field unacked_seen_gone "$res")"
fi

# -- 5b. node1 back: caught up as the replica --------------------------------------------------
log "--- 5b. node1 back as the replica"
TS=$(now)
docker start "$(cid node1)" >/dev/null && log "started node1"
if tc=$(wait_r 150 node2 node1 yes); then
    took=$(secs "$TS" "$tc")
    ok "node1 back: every replicated user in sync again $took s after docker start (epoch $(r_epochs))"
    figure "old primary started -> all ${#RUSERS[@]} users in sync (catch-up): $took s"
else
    bad "not in sync 150 s after node1 started: $(r_count node2 node1 yes) of ${#RUSERS[@]}"
fi
if res=$(same_copies node2 node1); then
    ok "node1's copy is node2's, file by file (bytes, UIDs, flags, internal dates, UIDVALIDITYs): $(head -n1 <<<"$res")"
else
    bad "node1 and node2 differ after the catch-up: $res"
fi
figure "after the catch-up, node2 vs node1: $(head -n1 <<<"$res")"

# -- 5c. node1 (now the replica) killed under load, and back -----------------------------------
log "--- 5c. kill the replica (node1) under load"
PC0=$(now)
rsnap "$WORK/rsnap-c-before" || bad "IMAP snapshot before killing the replica"
rload_start c
sleep 5
docker kill "$(cid node1)" >/dev/null && log "killed node1 (the replica)"
TK=$(now)
sleep 6
# A delivery acknowledged with the replica dead is on the primary alone: the directory must
# have been told first. Every user with one is out of sync (users without a write since the
# kill may still be, rightly, in sync).
TL=$(now)
list=$(users_list)
mapfile -t written < <(python3 - "$WORK/rload-c.log" "$TK" "$TL" <<'PY'
import json, sys
users = set()
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("acked") and r["t0"] >= float(sys.argv[2]) and r["t1"] <= float(sys.argv[3]):
        users.add(r["to"])
for u in sorted(users):
    print(u)
PY
)
unmarked=0
for u in "${written[@]}"; do
    [[ -z $u ]] && continue
    grep -q "^$u home=node2 replica=node1 in_sync=no " <<<"$list" || { unmarked=$((unmarked + 1)); log "    $u: $(grep "^$u " <<<"$list")"; }
done
if ((${#written[@]} > 0 && unmarked == 0)); then
    ok "replica killed: each of the ${#written[@]} users with a delivery acknowledged since the kill is marked out of sync ($(r_count node2 node1 no "$list") of ${#RUSERS[@]} marked, epochs $(r_epochs))"
else
    bad "replica killed: $unmarked of ${#written[@]} users with deliveries acknowledged since the kill still in sync"
fi
card=$(ctl "$R2" users show "${written[0]:-${RUSERS[0]}}")
if grep -q "replica  node1" <<<"$card" && grep -q "in sync  no" <<<"$card"; then
    ok "users show ${written[0]:-${RUSERS[0]}}: replica node1, in sync no"
else
    bad "users show after the replica's kill: $card"
fi
st=$(rstats "$WORK/rload-c.log" "$TK")
figure "replicated load, replica killed -> 6 s later: $st"
TS=$(now)
docker start "$(cid node1)" >/dev/null && log "started node1"
if tc=$(wait_r 150 node2 node1 yes); then
    took=$(secs "$TS" "$tc")
    ok "replica back: in sync again $took s after docker start, the load still running"
    figure "replica started -> all users in sync (under load): $took s"
else
    bad "replica not in sync 150 s after it started: $(r_count node2 node1 yes) of ${#RUSERS[@]}"
fi
sleep 2
rload_stop
st=$(rstats "$WORK/rload-c.log" "$TK" "$TS")
figure "replicated load while the replica was dead: $st"
if [[ $(field not_acked "$st") == 0 && $(field acked "$st") -gt 0 ]]; then
    ok "replica dead: every delivery acknowledged ($st)"
else
    bad "replica dead: deliveries not acknowledged ($st)"; grep -h '"error"' "$WORK/rload-c.log" | head -3 | sed 's/^/    /'
fi
figure "replicated load, whole phase: $(rstats "$WORK/rload-c.log" "$PC0"); flags: $(flagstats "$WORK/rflags-c.log")"
r_settled_c() { rsnap "$WORK/rsnap-c-after" "${NODE_IP[node2]}" && rverify "$WORK/rsnap-c-before" "$WORK/rsnap-c-after" "$WORK"/rload-*.log "$WORK"/rflags-*.log; }
if wait_for 60 r_settled_c; then
    ok "on node2: every message acknowledged in the whole test there once, UIDs kept, flag changes there: $(rverify "$WORK/rsnap-c-before" "$WORK/rsnap-c-after" "$WORK"/rload-*.log "$WORK"/rflags-*.log | head -n1)"
else
    bad "node2's copy after the replica's kill: $(rverify "$WORK/rsnap-c-before" "$WORK/rsnap-c-after" "$WORK"/rload-*.log "$WORK"/rflags-*.log)"
fi
if wait_r 30 node2 node1 yes >/dev/null && res=$(same_copies node2 node1); then
    ok "after the replica's kill and return: node1's copy is node2's, file by file: $(head -n1 <<<"$res")"
else
    bad "node1 and node2 differ after the replica came back: ${res:-not in sync}"
fi

# -- 5d. node1's data volume destroyed: a fresh, empty store where the replicas were -------------
# node1 is removed with its volume and started again on a new, empty one, with no write going
# on. The directory still says its copies are in sync: the node must tell it they are not (it
# started on a new store), so that node2 catches them up whole now. Otherwise each would stay
# empty until its user's next write, and a failover could promote an empty copy.
log "--- 5d. node1 (the replica) comes back on an empty volume"
docker rm -fv "$(name_of vols)" >/dev/null 2>&1
docker rm -f "$(cid node1)" >/dev/null && unset 'CID[node1]'
if docker volume rm "${COMPOSE_PROJECT_NAME}_node1-data" >/dev/null; then
    log "node1 and its volume removed"
else
    bad "cannot remove node1's volume"
fi
TS=$(now)
if timeout 120 "${COMPOSE[@]}" up -d --no-deps node1 >"$WORK/up-node1.log" 2>&1 && wait_for 60 healthy node1 && wait_for 30 nodes_up "$R1"; then
    ok "node1 recreated on an empty volume, up again ($(secs "$TS") s)"
else
    bad "node1 not back on a new volume"; sed 's/^/    /' "$WORK/up-node1.log"
fi
vols_up || bad "cannot mount the volumes again"
t=$(now)
if wait_for 60 same_copies node2 node1; then
    res=$(same_copies node2 node1)
    ok "node1's lost copies rebuilt without any write, $(secs "$TS") s after it started: $(head -n1 <<<"$res")"
    figure "replica's volume destroyed -> every copy rebuilt (no write needed): $(secs "$TS") s after node1 started"
else
    res=$(same_copies node2 node1)
    bad "node1's lost copies not rebuilt 60 s after it started on an empty volume, while users list says $(r_count node2 node1 yes) of ${#RUSERS[@]} in sync: $(head -n1 <<<"$res")"
    # Does a write bring them back? One delivery to each of the first half.
    for u in "${RUSERS[@]:0:10}"; do mc rload "$R1,$R2" send 25 "$u" "vol$RANDOM$RANDOM" >/dev/null || log "    send to $u failed"; done
    sleep 5
    "${MAILCHECK[@]}" maildirs "$(vol node2)" "$(vol node1)" "${RUSERS[@]:0:10}" >"$WORK/vol-written" &&
        log "    after one delivery each, r1..r10 rebuilt: $(head -n1 "$WORK/vol-written")" ||
        log "    after one delivery each, r1..r10: $(head -n1 "$WORK/vol-written")"
    "${MAILCHECK[@]}" maildirs "$(vol node2)" "$(vol node1)" "${RUSERS[@]:10}" >"$WORK/vol-unwritten"
    log "    r11..r20 (no write): $(head -n1 "$WORK/vol-unwritten")"
fi
figure "replica's volume destroyed: $(head -n1 <<<"$res")"
