#!/usr/bin/env bash
# End-to-end test of the docker-compose cluster, from this host (127.0.0.1, the published
# ports) and from two client containers with their own addresses on the compose network:
#
#   build the image from the Dockerfile (compose build) -> the offline path, docker/build.sh
#   restaging the image's own binary, makes the same image (files, owners, modes, config) ->
#   compose up uses the image as it is (nothing built or pulled) -> wait until the router's SMTP
#   port answers, `sirms ctl status` shows both nodes up and every healthcheck passes -> start
#   client1 (10.203.77.51) and client2 (.52) and route them to node1 and node2 with
#   `sirms ctl routes add` -> mail in over SMTP, submission with AUTH, out over POP3 (STLS,
#   POP3S) and IMAP (STARTTLS, IMAPS), each client landing on its own node, reading the
#   other's mail, whose Received: header names the sending client's address -> kill node1:
#   client1 fails over to node2 -> start it again -> cut it off the network: same ->
#   reconnect it -> restart the router: the routes are still there -> SIGKILL node2's
#   process: its restart policy brings it back -> compose down -v.
#
# The clients are containers of the sirms image running `sirms probe sleep` (the image has
# no shell or mail client); the host's python3 runs docker/mailcheck.py inside a client's
# network namespace (nsenter -n, so this needs root), so its connections come from the
# client's address. Prints `docker: N passed, M failed` and exits non-zero on any failure;
# removes the clients and the cluster (down -v) even when it fails. The build is a full
# release build inside the Dockerfile's Rust image (which docker/base-image.sh makes when no
# registry can be reached); SIRMS_BUILD=host builds on the host with docker/build.sh instead
# (incremental, in target/docker); SIRMS_SKIP_BUILD=1 reuses the existing sirms:latest image.
# SIRMS_KEEP=1 leaves everything running.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-sirms-test}
# The router's mail ports are published on this host's loopback only, not to the network.
export SIRMS_PUBLISH_IP=${SIRMS_PUBLISH_IP:-127.0.0.1}
declare -A NODE_IP=([node1]=10.203.77.11 [node2]=10.203.77.12)
ROUTER_IP=10.203.77.10
declare -A CLIENT_IP=([client1]=10.203.77.51 [client2]=10.203.77.52)
declare -A CLIENT_PID=()
client_name() { echo "${COMPOSE_PROJECT_NAME}_$1"; }
TOKEN=$(sed -n 's/^token *= *"\(.*\)"/\1/p' docker/config/router.toml)
MAILCHECK=(python3 "$ROOT/docker/mailcheck.py")
PASS=0
FAIL=0
T0=$(date +%s)
WORK=$(mktemp -d)

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$ROOT/docker-compose.yml")
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml")
else
    echo "docker: neither 'docker compose' nor 'docker-compose' found" >&2
    echo "docker: 0 passed, 1 failed"
    exit 1
fi
# Entering a container's network namespace needs root.
if [[ $(id -u) -eq 0 ]]; then
    NSENTER=(nsenter)
elif sudo -n true 2>/dev/null; then
    NSENTER=(sudo -n --preserve-env=MAILCHECK_HOST nsenter)
else
    echo "docker: nsenter needs root (run as root or with passwordless sudo)" >&2
    echo "docker: 0 passed, 1 failed"
    exit 1
fi

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { PASS=$((PASS + 1)); log "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); log "FAIL - $*"; }
compose() { "${COMPOSE[@]}" "$@"; }

# `sirms ctl` in a throwaway container of the init service: it reaches the router as
# http://router:7500 on the compose network, which also shows that the static binary
# resolves names FROM scratch. (The published 127.0.0.1:7500 is checked once, below.)
ctl() { compose run --rm --no-deps -T init ctl "$@" 2>&1 | grep -v "^Creating .*_run"; }

remove_clients() {
    local c
    for c in "${!CLIENT_IP[@]}"; do docker rm -fv "$(client_name "$c")" >/dev/null 2>&1; done
}

cleanup() {
    local rc=$?
    if ((FAIL > 0)); then
        log "logs of the failed run (last 40 lines per service):"
        compose logs --no-color --tail=40 router node1 node2 storage1 2>&1 | sed 's/^/    /'
    fi
    if [[ -z ${SIRMS_KEEP:-} ]]; then
        log "removing the client containers; compose down -v"
        remove_clients
        compose down -v --remove-orphans >/dev/null 2>&1 || true
    else
        log "SIRMS_KEEP set: the cluster is still running (docker rm -f $(client_name client1) $(client_name client2);" \
            "${COMPOSE[*]} -p $COMPOSE_PROJECT_NAME down -v)"
    fi
    [[ -n ${OFFLINE_IMAGE:-} ]] && docker image rm "$OFFLINE_IMAGE" >/dev/null 2>&1
    rm -rf "$WORK"
    log "total $(($(date +%s) - T0)) s"
    echo "docker: $PASS passed, $FAIL failed"
    if ((FAIL > 0 || rc != 0)); then exit 1; fi
    exit 0
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 1' INT TERM

# Waits (bounded) until "$@" succeeds; $1 = seconds.
wait_for() {
    local limit=$1 start
    shift
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) - start >= limit)); then return 1; fi
        sleep 2
    done
}

# from WHO mailcheck-args...: docker/mailcheck.py from this host (WHO=host, the published
# ports on 127.0.0.1) or from a client container (WHO=client1|client2: its network
# namespace, the router's compose address and container ports).
from() {
    local who=$1
    shift
    if [[ $who == host ]]; then
        MAILCHECK_HOST=127.0.0.1 "${MAILCHECK[@]}" "$@"
    else
        MAILCHECK_HOST=$ROUTER_IP "${NSENTER[@]}" -t "${CLIENT_PID[$who]}" -n "${MAILCHECK[@]}" "$@"
    fi
}

smtp_answers() { from host greet 2525; }
status_has() { # status_has NODE STATE-REGEX
    ctl status | grep -Eq "^$1 +[^ ]+ +[0-9]+ +$2 "
}
both_up() { status_has node1 'up +active' && status_has node2 'up +active'; }
greeted_by() { # greeted_by WHO NODE: the SMTP greeting WHO gets names NODE
    local port=25
    [[ $1 == host ]] && port=2525
    [[ $(from "$1" greet "$port" 2>/dev/null) == "node=$2" ]]
}
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(compose ps -q "$1")"; }
healthy() { local s; for s in "$@"; do [[ $(health "$s") == healthy ]] || return 1; done; }

# mail WHO mailcheck-args...: runs a mailcheck command; its `node=` line is left in $NODE.
NODE=""
mail() {
    local out rc
    out=$(from "$@" 2>&1)
    rc=$?
    NODE=${out##*node=}
    [[ $rc -eq 0 ]] || { NODE=""; log "    $out"; }
    return $rc
}
newtok() { echo "t$(date +%s)$1$RANDOM"; }
ALICE=alice@example.test:alice-pw

# --- preflight -------------------------------------------------------------------------
# A cluster left by an earlier run of this script (SIRMS_KEEP) goes first.
remove_clients
compose down -v --remove-orphans >/dev/null 2>&1 || true
# A port is taken if anything listens on it at the address Docker would bind, or on all
# addresses (or on any address, when Docker binds all of them).
port_taken() { # port_taken IP PORT
    local ip=$1 port=$2 local_addr
    (exec 3<>"/dev/tcp/${ip/0.0.0.0/127.0.0.1}/$port") 2>/dev/null && return 0
    while read -r _ _ _ local_addr _; do
        case $local_addr in
            "*:$port" | "0.0.0.0:$port" | "[::]:$port" | "$ip:$port") return 0 ;;
            *":$port") [[ $ip == 0.0.0.0 ]] && return 0 ;;
        esac
    done < <(ss -Hltn "sport = :$port" 2>/dev/null)
    return 1
}
for port in 2525 2587 2465 2143 2993 2110 2995 24190; do
    if port_taken "$SIRMS_PUBLISH_IP" "$port"; then
        bad "host port $SIRMS_PUBLISH_IP:$port is already in use: stop whatever holds it (another cluster?)"
        exit 1
    fi
done
if port_taken 127.0.0.1 7500; then bad "host port 127.0.0.1:7500 is already in use"; exit 1; fi

# --- build -----------------------------------------------------------------------------
if [[ -n ${SIRMS_SKIP_BUILD:-} ]]; then
    log "SIRMS_SKIP_BUILD: using sirms:latest as it is"
elif [[ ${SIRMS_BUILD:-} == host ]]; then
    log "building the image on the host (docker/build.sh)"
    b0=$(date +%s)
    if docker/build.sh; then ok "image built by docker/build.sh ($(($(date +%s) - b0)) s)"; else bad "docker/build.sh"; exit 1; fi
else
    # What `docker compose up` does when the image is missing, done here explicitly so that it
    # also rebuilds an image that is there.
    log "building the image from the Dockerfile (${COMPOSE[*]} build)"
    b0=$(date +%s)
    if compose build; then
        ok "image built from the Dockerfile ($(($(date +%s) - b0)) s)"
    else
        bad "compose build (no registry? docker/base-image.sh makes its base image; or SIRMS_BUILD=host)"
        exit 1
    fi
fi
if docker run --rm sirms:latest --version >/dev/null 2>&1; then
    ok "the static binary runs FROM scratch ($(docker run --rm sirms:latest --version))"
else
    bad "docker run --rm sirms:latest --version"
    exit 1
fi
if [[ $(docker image inspect -f '{{.Config.User}}' sirms:latest) == 10001:10001 ]]; then
    ok "image runs as uid 10001"
else
    bad "image user is not 10001"
fi
# The image's own binary, for `sirms ctl` from this host and for the offline path below.
HOSTBIN=$WORK/sirms
c=$(docker create sirms:latest) && docker cp "$c:/usr/local/bin/sirms" "$HOSTBIN" >/dev/null && docker rm -v "$c" >/dev/null
[[ -x $HOSTBIN ]] || { bad "cannot copy /usr/local/bin/sirms out of sirms:latest"; exit 1; }

# The offline path (docker/build.sh: host-staged tree, docker/Dockerfile.host) must make the
# image the Dockerfile makes. Restaging the image's own binary checks that without a second
# release build: the same files with the same owners and modes, the same run-time config.
# (Sizes are left out: the host's CA bundle may be another version than the build image's.)
layout() { # layout IMAGE: type, mode, owner and path of every file, as `docker export` has them
    local c
    c=$(docker create "$1") || return 1
    docker export "$c" | tar --numeric-owner -tvf - | awk '{print $1, $2, $NF}' | sort
    docker rm -v "$c" >/dev/null
}
runconfig() { docker image inspect -f '{{json .Config.User}} {{json .Config.Env}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.WorkingDir}} {{json .Config.Volumes}} {{json .Config.ExposedPorts}}' "$1"; }
OFFLINE_IMAGE=sirms:offline-check-$COMPOSE_PROJECT_NAME
o0=$(date +%s)
if SIRMS_SKIP_CARGO=1 SIRMS_BIN=$HOSTBIN SIRMS_IMAGE=$OFFLINE_IMAGE docker/build.sh >"$WORK/offline.log" 2>&1; then
    ok "offline path: docker/build.sh (SIRMS_SKIP_CARGO, the image's binary) built $OFFLINE_IMAGE ($(($(date +%s) - o0)) s)"
    if diff <(layout sirms:latest) <(layout "$OFFLINE_IMAGE") >"$WORK/layout.diff"; then
        ok "offline path: the same files, owners and modes as the Dockerfile's image ($(layout sirms:latest | wc -l) entries)"
    else
        bad "offline path: files differ from the Dockerfile's image (< Dockerfile, > docker/build.sh):"
        sed 's/^/    /' "$WORK/layout.diff"
    fi
    if [[ $(runconfig sirms:latest) == "$(runconfig "$OFFLINE_IMAGE")" ]]; then
        ok "offline path: the same user, env, entrypoint, ports and volume as the Dockerfile's image"
    else
        bad "offline path: config differs: Dockerfile $(runconfig sirms:latest), docker/build.sh $(runconfig "$OFFLINE_IMAGE")"
    fi
else
    bad "offline path: docker/build.sh failed:"
    sed 's/^/    /' "$WORK/offline.log"
fi
docker image rm "$OFFLINE_IMAGE" >/dev/null 2>&1

# --- up --------------------------------------------------------------------------------
# A plain `compose up -d` with the image present, as after docker/build.sh or a build:
# compose must run that image, neither building nor pulling one.
log "compose up -d (project $COMPOSE_PROJECT_NAME, ${COMPOSE[*]})"
image_id=$(docker image inspect -f '{{.Id}}' sirms:latest)
u0=$(date +%s)
if compose up -d >"$WORK/up.log" 2>&1; then
    sed 's/^/    /' "$WORK/up.log"
    ok "compose up -d ($(($(date +%s) - u0)) s)"
else
    sed 's/^/    /' "$WORK/up.log"
    bad "compose up -d"
    exit 1
fi
running=$(for s in router storage1 node1 node2; do docker inspect -f '{{.Image}}' "$(compose ps -q "$s")"; done | sort -u)
if grep -Eqi '^(#[0-9]+ )?(building|step [0-9]|pulling)|was built because' "$WORK/up.log" ||
    [[ $(docker image inspect -f '{{.Id}}' sirms:latest) != "$image_id" || $running != "$image_id" ]]; then
    bad "compose up -d built or pulled an image although sirms:latest was there"
else
    ok "compose up -d ran the existing sirms:latest (${image_id:7:12}): nothing built or pulled"
fi

if wait_for 120 smtp_answers; then ok "router's SMTP port 127.0.0.1:2525 answers"; else bad "no SMTP greeting on 127.0.0.1:2525 within 120 s"; exit 1; fi
if wait_for 120 both_up; then ok "sirms ctl status: node1 and node2 up"; else bad "nodes not up within 120 s"; ctl status; exit 1; fi
ok "DNS FROM scratch: sirms ctl reached http://router:7500 by name; the nodes registered through it"
log "$(ctl status | sed '2,$s/^/         /')"
if wait_for 60 healthy router storage1 node1 node2; then
    ok "healthchecks pass: router (sirms ctl status), storage1 and the nodes (sirms probe)"
else
    bad "healthchecks: router $(health router), storage1 $(health storage1), node1 $(health node1), node2 $(health node2)"
fi
for s in node1 storage1; do
    log "    $s's last healthcheck: $(docker inspect -f '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$(compose ps -q $s)" | grep . | tail -n1)"
done
policies=$(for s in router storage1 node1 node2 init; do docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(compose ps -q $s)"; done | tr '\n' ' ')
if [[ $policies == "unless-stopped unless-stopped unless-stopped unless-stopped on-failure " ]]; then
    ok "restart policies: unless-stopped for the services, on-failure for init"
else
    bad "restart policies: $policies"
fi
if status_has store1 'up +storage'; then ok "store1 registered as storage node"; else bad "store1 not in ctl status"; fi
if [[ $(ctl users list) == *"alice@example.test home=store1"* ]]; then ok "init created alice@example.test homed on store1"; else bad "init did not create alice"; fi
init_cid=$(compose ps -q init)
if [[ -n $init_cid && $(docker inspect -f '{{.State.ExitCode}}' "$init_cid") == 0 ]]; then ok "init exited 0"; else bad "init did not exit 0"; fi
if "$HOSTBIN" ctl --router http://127.0.0.1:7500 --token "$TOKEN" status >/dev/null 2>&1; then
    ok "admin API published on 127.0.0.1:7500 (host sirms ctl)"
else
    bad "host sirms ctl --router http://127.0.0.1:7500 status"
fi

# --- client containers -----------------------------------------------------------------
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(compose ps -q router)")
for c in client1 client2; do
    if docker run -d --name "$(client_name "$c")" --label "sirms-test=$COMPOSE_PROJECT_NAME" --network "$NET" \
        --ip "${CLIENT_IP[$c]}" sirms:latest probe sleep 3600 >/dev/null; then
        CLIENT_PID[$c]=$(docker inspect -f '{{.State.Pid}}' "$(client_name "$c")")
        ok "$c: a container at ${CLIENT_IP[$c]} on $NET (pid ${CLIENT_PID[$c]})"
    else
        bad "could not start $c"
        exit 1
    fi
done
if ctl routes add "${CLIENT_IP[client1]}/32" node1 >/dev/null && ctl routes add "${CLIENT_IP[client2]}/32" node2 >/dev/null; then
    ok "routes: client1 -> node1, client2 -> node2 ($(ctl routes test "${CLIENT_IP[client1]}" | head -n1))"
else
    bad "sirms ctl routes add"
fi

# --- mail flows ------------------------------------------------------------------------
# From this host, through the published ports.
tok=$(newtok h)
if mail host send 2525 alice@example.test "$tok"; then HOSTNODE=$NODE; ok "host, SMTP 2525: mail for alice accepted by $HOSTNODE"; else bad "host, SMTP 2525"; HOSTNODE=""; fi
if [[ $HOSTNODE == node1 || $HOSTNODE == node2 ]]; then ok "greeting names a node ($HOSTNODE)"; else bad "greeting names no node"; exit 1; fi
if wait_for 20 mail host pop3 2110 "$ALICE" "$tok" --stls; then ok "host, POP3 2110 + STLS: alice reads it back byte for byte (via $NODE)"; else bad "host, POP3 2110 + STLS"; fi
if mail host pop3 2995 "$ALICE" "$tok" --tls; then ok "host, POP3S 2995: read back (via $NODE)"; else bad "host, POP3S 2995"; fi
if mail host imap 2143 "$ALICE" "$tok" --starttls; then ok "host, IMAP 2143 + STARTTLS: read back byte for byte (via $NODE)"; else bad "host, IMAP 2143 + STARTTLS"; fi
if mail host imap 2993 "$ALICE" "$tok" --tls; then ok "host, IMAPS 2993: read back (via $NODE)"; else bad "host, IMAPS 2993"; fi

# ManageSieve through the router: a script alice uploads files the next message where it says.
sorter='require ["fileinto", "mailbox"]; if header :contains "subject" "sirms docker test" { fileinto :create "Sorted"; }'
if mail host sieve 24190 "$ALICE" "$sorter"; then ok "host, ManageSieve 24190: alice's script uploaded and active"; else bad "host, ManageSieve 24190"; fi
sleep 3  # nodes reuse a compiled script for up to 2 s
tok=$(newtok s)
if mail host send 2525 alice@example.test "$tok" && wait_for 20 mail host imap 2993 "$ALICE" "$tok" --tls --mailbox Sorted; then
    ok "host: the next message for alice is in Sorted, as her script says (via $NODE)"
else
    bad "host: mail for alice not filed by her Sieve script"
fi
if mail host sieve 24190 "$ALICE" "keep;"; then ok "host, ManageSieve: alice's script back to keep"; else bad "host, ManageSieve: resetting alice's script"; fi
sleep 3

# From the clients: each lands on the node the table names; the other reads it back.
declare -A SENT=()
for c in client1 client2; do
    want=$([[ $c == client1 ]] && echo node1 || echo node2)
    SENT[$c]=$(newtok "${c: -1}")
    if mail "$c" send 25 alice@example.test "${SENT[$c]}" && [[ $NODE == "$want" ]]; then
        ok "$c (${CLIENT_IP[$c]}), SMTP: accepted by $want, as the route table says"
    else
        bad "$c, SMTP: accepted by '${NODE}', not $want"
    fi
done
if wait_for 20 mail client2 imap 143 "$ALICE" "${SENT[client1]}" --starttls --received-from "${CLIENT_IP[client1]}" --received-by node1 &&
    [[ $NODE == node2 ]]; then
    ok "client2, IMAP + STARTTLS via node2: client1's mail, Received: from [${CLIENT_IP[client1]}] by node1 (PROXY v2)"
else
    bad "client2, IMAP + STARTTLS: client1's mail (via '${NODE}')"
fi
if mail client2 pop3 110 "$ALICE" "${SENT[client1]}" --stls --received-from "${CLIENT_IP[client1]}" && [[ $NODE == node2 ]]; then
    ok "client2, POP3 + STLS via node2: client1's mail"
else
    bad "client2, POP3 + STLS: client1's mail (via '${NODE}')"
fi
if wait_for 20 mail client1 imap 993 "$ALICE" "${SENT[client2]}" --tls --received-from "${CLIENT_IP[client2]}" --received-by node2 &&
    [[ $NODE == node1 ]]; then
    ok "client1, IMAPS via node1: client2's mail, Received: from [${CLIENT_IP[client2]}] by node2"
else
    bad "client1, IMAPS: client2's mail (via '${NODE}')"
fi
if mail client1 pop3 995 "$ALICE" "${SENT[client2]}" --tls --received-from "${CLIENT_IP[client2]}" && [[ $NODE == node1 ]]; then
    ok "client1, POP3S via node1: client2's mail"
else
    bad "client1, POP3S: client2's mail (via '${NODE}')"
fi
tok2=$(newtok b)
if mail client1 send 587 alice@example.test "$tok2" --starttls --auth bob@example.test:bob-pw && [[ $NODE == node1 ]] &&
    wait_for 20 mail client2 pop3 110 "$ALICE" "$tok2" --stls --received-from "${CLIENT_IP[client1]}" --received-by node1; then
    ok "client1, submission 587 + STARTTLS + AUTH via node1: bob -> alice, read back by client2"
else
    bad "client1, submission 587 + STARTTLS + AUTH"
fi
tok2s=$(newtok s)
if mail client2 send 465 alice@example.test "$tok2s" --tls --auth bob@example.test:bob-pw && [[ $NODE == node2 ]] &&
    wait_for 20 mail client1 imap 143 "$ALICE" "$tok2s" --starttls --received-from "${CLIENT_IP[client2]}" --received-by node2; then
    ok "client2, submissions 465 (implicit TLS) + AUTH via node2: bob -> alice, read back by client1"
else
    bad "client2, submissions 465 (implicit TLS) + AUTH"
fi

# --- failover: kill node1, which client1 is routed to ---------------------------------
log "docker-compose kill node1"
compose kill node1 >/dev/null 2>&1
if wait_for 60 greeted_by client1 node2; then ok "after killing node1, client1 is served by node2"; else bad "no failover of client1 to node2"; fi
if ! docker exec "$(client_name client1)" /usr/local/bin/sirms probe tcp "${NODE_IP[node1]}:25" --timeout 2 >/dev/null 2>&1; then
    ok "sirms probe from client1: node1's SMTP port is gone"
else
    bad "sirms probe from client1 still reaches node1 after the kill"
fi
tok3=$(newtok c)
if mail client1 send 25 alice@example.test "$tok3" && [[ $NODE == node2 ]]; then ok "client1's mail accepted by node2"; else bad "client1's mail not accepted with node1 killed"; fi
if wait_for 20 mail client1 pop3 110 "$ALICE" "$tok3" --stls --received-from "${CLIENT_IP[client1]}" --received-by node2; then
    ok "and read back by client1 via $NODE (mailbox on store1)"
else
    bad "not read back with node1 killed"
fi
if mail client1 pop3 110 "$ALICE" "${SENT[client1]}" --stls --received-by node1; then ok "mail node1 accepted before it died is still readable"; else bad "earlier mail unreadable"; fi
if mail client2 imap 143 "$ALICE" "$tok3" --starttls && [[ $NODE == node2 ]]; then ok "client2, IMAP via node2 reads it too"; else bad "client2, IMAP with node1 killed"; fi
if greeted_by host node2; then ok "this host is served by node2 too"; else bad "host not served by node2 with node1 killed"; fi
if wait_for 30 status_has node1 'down +active'; then ok "ctl status shows node1 down"; else bad "ctl status does not show node1 down"; fi

log "starting node1 again"
compose start node1 >/dev/null 2>&1
if wait_for 60 both_up && wait_for 30 greeted_by client1 node1; then
    ok "node1 is back up and gets client1's connections again (route table)"
else
    bad "node1 did not come back"
fi
if wait_for 60 healthy node1; then ok "node1's healthcheck passes again"; else bad "node1 health: $(health node1)"; fi

# --- partition: cut node1 off the compose network --------------------------------------
cid=$(compose ps -q node1)
log "disconnecting node1 from $NET"
if docker network disconnect "$NET" "$cid"; then
    if wait_for 60 greeted_by client1 node2; then ok "partitioned node1: client1 is served by node2"; else bad "no failover after the partition"; fi
    tok4=$(newtok d)
    if mail client1 send 25 alice@example.test "$tok4" && [[ $NODE == node2 ]] && wait_for 20 mail client2 pop3 110 "$ALICE" "$tok4" --stls; then
        ok "mail flows during the partition (client1 -> node2, read by client2)"
    else
        bad "mail does not flow during the partition"
    fi
    if greeted_by client2 node2; then ok "client2 stays on node2"; else bad "client2 moved during the partition"; fi
    docker network connect --ip "${NODE_IP[node1]}" "$NET" "$cid"
    if wait_for 90 both_up && wait_for 30 greeted_by client1 node1; then ok "node1 reconnected and serving client1 again"; else bad "node1 not back after reconnecting"; fi
else
    bad "docker network disconnect"
fi

# --- router restart: the nodes re-register, the routes stay ---------------------------
log "restarting the router"
compose restart router >/dev/null 2>&1
if wait_for 60 smtp_answers && wait_for 60 both_up; then ok "router restarted; nodes registered again"; else bad "cluster not back after a router restart"; fi
if wait_for 30 greeted_by client1 node1 && greeted_by client2 node2; then ok "the route table survived the restart (client1 -> node1, client2 -> node2)"; else bad "routes lost in the router restart"; fi
tok5=$(newtok e)
if mail client2 send 25 alice@example.test "$tok5" && wait_for 20 mail client1 pop3 995 "$ALICE" "$tok5" --tls --received-from "${CLIENT_IP[client2]}"; then
    ok "mail flows after the router restart"
else
    bad "mail does not flow after the router restart"
fi

# --- crash: SIGKILL node2's process behind Docker's back: the restart policy ------------
cid=$(compose ps -q node2)
restarts=$(docker inspect -f '{{.RestartCount}}' "$cid")
log "SIGKILL node2's process (pid $(docker inspect -f '{{.State.Pid}}' "$cid") on this host)"
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$cid")"
restarted() { (($(docker inspect -f '{{.RestartCount}}' "$cid") > restarts)) && [[ $(docker inspect -f '{{.State.Running}}' "$cid") == true ]]; }
if wait_for 30 restarted; then ok "Docker restarted node2 (restart: unless-stopped)"; else bad "node2 not restarted after a crash"; fi
if wait_for 60 both_up && wait_for 30 greeted_by client2 node2 && wait_for 60 healthy node2; then
    ok "node2 serves client2 again and is healthy"
else
    bad "node2 not back after the crash"
fi
tok6=$(newtok f)
if mail client2 send 25 alice@example.test "$tok6" && [[ $NODE == node2 ]] && wait_for 20 mail client1 imap 993 "$ALICE" "$tok6" --tls --received-by node2; then
    ok "mail flows through the restarted node2"
else
    bad "mail does not flow through the restarted node2"
fi
