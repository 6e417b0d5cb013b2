#!/usr/bin/env bash
# End-to-end test of the docker-compose cluster, from this host only (127.0.0.1) and the
# containers it creates:
#
#   build the image (docker/build.sh) -> compose up -> wait until the router's SMTP port
#   answers and `sirms ctl status` shows both nodes up -> mail in over SMTP, out over POP3
#   (STLS, POP3S) and IMAP (STARTTLS, IMAPS), submission with AUTH -> stop the node this host is routed to: mail
#   still flows through the other one -> start it again -> cut it off the network: same ->
#   reconnect it -> compose down -v.
#
# Prints `docker: N passed, M failed` and exits non-zero on any failure; cleans up (down -v)
# even when it fails. SIRMS_SKIP_BUILD=1 reuses the existing sirms:latest image;
# SIRMS_KEEP=1 leaves the cluster running for a look.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-sirms-test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/docker}
declare -A NODE_IP=([node1]=10.203.77.11 [node2]=10.203.77.12)
TOKEN=$(sed -n 's/^token *= *"\(.*\)"/\1/p' docker/config/router.toml)
MAILCHECK=(python3 "$ROOT/docker/mailcheck.py")
PASS=0
FAIL=0
T0=$(date +%s)

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$ROOT/docker-compose.yml")
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml")
else
    echo "docker: neither 'docker compose' nor 'docker-compose' found" >&2
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

cleanup() {
    local rc=$?
    if ((FAIL > 0)); then
        log "logs of the failed run (last 40 lines per service):"
        compose logs --no-color --tail=40 router node1 node2 storage1 2>&1 | sed 's/^/    /'
    fi
    if [[ -z ${SIRMS_KEEP:-} ]]; then
        log "compose down -v"
        compose down -v --remove-orphans >/dev/null 2>&1 || true
    else
        log "SIRMS_KEEP set: the cluster is still running (${COMPOSE[*]} -p $COMPOSE_PROJECT_NAME down -v)"
    fi
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

smtp_answers() { "${MAILCHECK[@]}" greet 2525; }
status_has() { # status_has NODE STATE-REGEX
    ctl status | grep -Eq "^$1 +[^ ]+ +[0-9]+ +$2 "
}
both_up() { status_has node1 'up +active' && status_has node2 'up +active'; }
greeted_by() { # greeted_by NODE: the SMTP greeting on 2525 names NODE
    [[ $("${MAILCHECK[@]}" greet 2525 2>/dev/null) == "node=$1" ]]
}

# Runs a mailcheck command; its `node=` line is left in $NODE.
NODE=""
mail() {
    local out
    out=$("${MAILCHECK[@]}" "$@" 2>&1)
    local rc=$?
    NODE=${out##*node=}
    [[ $rc -eq 0 ]] || { NODE=""; log "    $out"; }
    return $rc
}

# --- preflight -------------------------------------------------------------------------
# A cluster left by an earlier run of this script (SIRMS_KEEP) goes first.
compose down -v --remove-orphans >/dev/null 2>&1 || true
for port in 2525 2587 2465 2143 2993 2110 2995 7500; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        bad "host port $port is already in use: stop whatever holds it (another cluster?)"
        exit 1
    fi
done

# --- build -----------------------------------------------------------------------------
if [[ -z ${SIRMS_SKIP_BUILD:-} ]]; then
    log "building the image (docker/build.sh)"
    b0=$(date +%s)
    if docker/build.sh; then ok "image built ($(($(date +%s) - b0)) s)"; else bad "docker/build.sh"; exit 1; fi
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

# --- up --------------------------------------------------------------------------------
log "compose up -d (project $COMPOSE_PROJECT_NAME, ${COMPOSE[*]})"
u0=$(date +%s)
if compose up -d; then ok "compose up -d ($(($(date +%s) - u0)) s)"; else bad "compose up -d"; exit 1; fi

if wait_for 120 smtp_answers; then ok "router's SMTP port 127.0.0.1:2525 answers"; else bad "no SMTP greeting on 127.0.0.1:2525 within 120 s"; exit 1; fi
if wait_for 120 both_up; then ok "sirms ctl status: node1 and node2 up"; else bad "nodes not up within 120 s"; ctl status; exit 1; fi
ok "DNS FROM scratch: sirms ctl reached http://router:7500 by name; the nodes registered through it"
log "$(ctl status | sed '2,$s/^/         /')"
if status_has store1 'up +storage'; then ok "store1 registered as storage node"; else bad "store1 not in ctl status"; fi
if [[ $(ctl users list) == *"alice@example.test home=store1"* ]]; then ok "init created alice@example.test homed on store1"; else bad "init did not create alice"; fi
init_cid=$(compose ps -q init)
if [[ -n $init_cid && $(docker inspect -f '{{.State.ExitCode}}' "$init_cid") == 0 ]]; then ok "init exited 0"; else bad "init did not exit 0"; fi
if [[ -n $(command -v "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/sirms") ]] &&
    "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/sirms" ctl --router http://127.0.0.1:7500 --token "$TOKEN" status >/dev/null 2>&1; then
    ok "admin API published on 127.0.0.1:7500 (host sirms ctl)"
else
    bad "host sirms ctl --router http://127.0.0.1:7500 status"
fi

# --- mail flows ------------------------------------------------------------------------
tok=t$(date +%s)a$RANDOM
if mail send 2525 alice@example.test "$tok"; then
    FIRST=$NODE
    ok "SMTP 2525: mail for alice accepted by $FIRST"
else
    bad "SMTP 2525: mail for alice"
    FIRST=""
fi
if [[ $FIRST == node1 || $FIRST == node2 ]]; then ok "greeting names a node ($FIRST)"; else bad "greeting names no node"; exit 1; fi
OTHER=$([[ $FIRST == node1 ]] && echo node2 || echo node1)
if wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok" --stls; then
    ok "POP3 2110 + STLS: alice reads it back byte for byte (via $NODE)"
else
    bad "POP3 2110 + STLS: message not read back"
fi
if mail pop3 2995 alice@example.test:alice-pw "$tok" --tls; then ok "POP3S 2995: read back (via $NODE)"; else bad "POP3S 2995"; fi
tok2=t$(date +%s)b$RANDOM
if mail send 2587 alice@example.test "$tok2" --starttls --auth bob@example.test:bob-pw; then
    ok "submission 2587 + STARTTLS + AUTH: bob -> alice"
else
    bad "submission 2587 + STARTTLS + AUTH"
fi
if wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok2" --stls; then ok "bob's mail read back"; else bad "bob's mail not read back"; fi
tok2s=t$(date +%s)s$RANDOM
if mail send 2465 alice@example.test "$tok2s" --tls --auth bob@example.test:bob-pw &&
    wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok2s" --stls; then
    ok "submissions 2465 (implicit TLS) + AUTH: bob -> alice, read back"
else
    bad "submissions 2465 (implicit TLS) + AUTH"
fi
if mail imap 2143 alice@example.test:alice-pw "$tok" --starttls; then ok "IMAP 2143 + STARTTLS: read back byte for byte (via $NODE)"; else bad "IMAP 2143 + STARTTLS"; fi
if mail imap 2993 alice@example.test:alice-pw "$tok2" --tls; then ok "IMAPS 2993: read back (via $NODE)"; else bad "IMAPS 2993"; fi

# --- failover: stop the node this host is routed to -----------------------------------
log "stopping $FIRST"
compose stop "$FIRST" >/dev/null 2>&1
if wait_for 60 greeted_by "$OTHER"; then ok "after stopping $FIRST, 127.0.0.1 is served by $OTHER"; else bad "no failover to $OTHER"; fi
tok3=t$(date +%s)c$RANDOM
if mail send 2525 alice@example.test "$tok3" && [[ $NODE == "$OTHER" ]]; then ok "mail still accepted (by $OTHER)"; else bad "mail not accepted with $FIRST stopped"; fi
if wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok3" --stls; then ok "and read back via $NODE (mailbox on store1)"; else bad "not read back with $FIRST stopped"; fi
if mail pop3 2110 alice@example.test:alice-pw "$tok" --stls; then ok "mail accepted by $FIRST before it stopped is still readable"; else bad "earlier mail unreadable"; fi
if mail imap 2143 alice@example.test:alice-pw "$tok3" --starttls && [[ $NODE == "$OTHER" ]]; then ok "IMAP via $OTHER reads it too"; else bad "IMAP with $FIRST stopped"; fi
if wait_for 30 status_has "$FIRST" 'down +active'; then ok "ctl status shows $FIRST down"; else bad "ctl status does not show $FIRST down"; fi

log "starting $FIRST again"
compose start "$FIRST" >/dev/null 2>&1
if wait_for 60 both_up && wait_for 30 greeted_by "$FIRST"; then
    ok "$FIRST is back up and gets this host's connections again (rendezvous hashing)"
else
    bad "$FIRST did not come back"
fi

# --- partition: cut the node off the compose network ----------------------------------
cid=$(compose ps -q "$FIRST")
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$cid")
log "disconnecting $FIRST from $net"
if docker network disconnect "$net" "$cid"; then
    if wait_for 60 greeted_by "$OTHER"; then ok "partitioned $FIRST: 127.0.0.1 is served by $OTHER"; else bad "no failover after the partition"; fi
    tok4=t$(date +%s)d$RANDOM
    if mail send 2525 alice@example.test "$tok4" && wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok4" --stls; then
        ok "mail flows during the partition"
    else
        bad "mail does not flow during the partition"
    fi
    docker network connect --ip "${NODE_IP[$FIRST]}" "$net" "$cid"
    if wait_for 90 both_up && wait_for 30 greeted_by "$FIRST"; then ok "$FIRST reconnected and serving again"; else bad "$FIRST not back after reconnecting"; fi
else
    bad "docker network disconnect"
fi

# --- router restart: the nodes re-register ---------------------------------------------
log "restarting the router"
compose restart router >/dev/null 2>&1
if wait_for 60 smtp_answers && wait_for 60 both_up; then ok "router restarted; nodes registered again"; else bad "cluster not back after a router restart"; fi
tok5=t$(date +%s)e$RANDOM
if mail send 2525 alice@example.test "$tok5" && wait_for 20 mail pop3 2110 alice@example.test:alice-pw "$tok5" --stls; then
    ok "mail flows after the router restart"
else
    bad "mail does not flow after the router restart"
fi
