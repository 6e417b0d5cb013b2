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
#   and at the end every message acknowledged with 250 is in its mailbox (read over IMAP).
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
declare -A CLIENT_IP=([probe]=$NET_PREFIX.50 [loadA]=$NET_PREFIX.51 [loadB]=$NET_PREFIX.52)
declare -A CLIENT_PID=()
# Extra source addresses: 60 for the probe container (the source counts), 6 per load client.
PROBE_SRCS=()
for i in $(seq 60 119); do PROBE_SRCS+=("$NET_PREFIX.$i"); done
declare -A LOAD_SRCS=([loadA]=$(seq -s, -f "$NET_PREFIX.%g" 130 135) [loadB]=$(seq -s, -f "$NET_PREFIX.%g" 140 145))
declare -A LOAD_USER=([loadA]=alice@example.test:alice-pw [loadB]=bob@example.test:bob-pw)
declare -A LOAD_ROUTERS=([loadA]=$R1,$R2 [loadB]=$R2,$R1)
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
    for c in probe loadA loadB router-sled impostor devtoken; do docker rm -fv "$(name_of "$c")" >/dev/null 2>&1; done
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
            "$(for c in probe loadA loadB router-sled; do printf '%s ' "$(name_of $c)"; done)" \
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
for c in probe loadA loadB; do
    if docker run -d --name "$(name_of "$c")" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network "$NET" \
        --ip "${CLIENT_IP[$c]}" sirms:latest probe sleep 3600 >/dev/null; then
        CLIENT_PID[$c]=$(docker inspect -f '{{.State.Pid}}' "$(name_of "$c")")
    else
        bad "could not start client container $c"; exit 1
    fi
done
added=0
for ip in "${PROBE_SRCS[@]}"; do inside probe ip addr add "$ip/32" dev eth0 && added=$((added + 1)); done
for c in loadA loadB; do
    for ip in ${LOAD_SRCS[$c]//,/ }; do inside "$c" ip addr add "$ip/32" dev eth0 && added=$((added + 1)); done
done
if ((added == ${#PROBE_SRCS[@]} + 12)); then
    ok "client containers: probe ${CLIENT_IP[probe]} + ${#PROBE_SRCS[@]} sources, loadA ${LOAD_SRCS[loadA]}, loadB ${LOAD_SRCS[loadB]}"
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
