#!/usr/bin/env bash
# The paper's experiment (Figure 7) plus the Postfix + Dovecot baseline, in one run.
#
#   bench/run.sh                 # default matrix: N = 10^2, 10^3, 10^4 x C = 1, 16 for Postfix+Dovecot,
#                                # N1, N2, N2_STORE, N2_REPL side by side, IMAP + POP3 fetch tests, then the same
#                                # for the SIRMS targets with each node CPU-limited (scale-out); ~40-45 min
#   bench/run.sh --full          # adds N = 10^5 (one repeat; about 2 more hours, most of it Postfix+Dovecot)
#   bench/run.sh --quick         # smoke test: N = 10^2 and 10^3 once, no CPU-limited phase (~5 min)
#   bench/run.sh --no-limited    # skip the CPU-limited phase      --limited-only: only that phase
#   bench/run.sh --router-overhead   # issue 6's goal: one node, reached directly and through a router in
#                                # front of it (same node, same mailboxes), deliver + IMAP + POP3; ~8 min
#   bench/run.sh --router-overhead --router-own-cpu   # the same, with the router pinned to CPU 1 and the
#                                # node and the client to CPU 0 (both targets), as if the router had its own
#                                # machine, as in the paper; same as ROUTER_CPUS=1 NODE_CPUS=0 CLIENT_CPUS=0
#   bench/run.sh --client=sirms  # the deliver test with `sirms bench smtp` instead of mailbench, for every
#                                # target (Postfix+Dovecot too); same as BENCH_CLIENT=sirms
#   bench/run.sh --deliver-only  # skip the IMAP/POP3 fetch tests
#   bench/run.sh --replicated    # issue 25's goal: Postfix+Dovecot, N1 and N2_REPL (two nodes, every
#                                # mailbox on both) only, deliver test, N = 10^4, C = 1, 16, both phases
#                                # (shared cores, then each node at CPU_QUOTA); ~15 min
#
# Environment knobs [defaults]: SIZES ["100:2,1000:2,10000:1"] (N:repeats; one mailbench call per N)
# CONC [1,16] FETCH_REPEAT [2] FETCH_COUNT [1000] CPU_QUOTA [25] (% of one CPU for each SIRMS mail node
# and storage node in the limited phase; routers are not limited) LIMITED_PFDC [0] (1: also run
# Postfix+Dovecot, limited to CPU_QUOTA as one box, in the limited phase) BENCH_CLIENT [mailbench]
# (sirms: the deliver test's client is `sirms bench smtp`, run per C, repeat and target in mailbench's
# order, its JSON reports gathered into the same results file for report.py) QUIET_WAIT [8]
# QUIET_MAX_CORES [0.5] (mailbench waits up to QUIET_WAIT s before each timed run for the rest of the
# machine to use less than QUIET_MAX_CORES) SIRMS (binary; default: built here with
# CARGO_TARGET_DIR=target/bench) NO_BUILD=1 KEEP=1 (keep data dirs and logs under $RUN)
# BASELINE_SIRMS (another sirms binary, e.g. one built before a change: it runs as one more
# target, N1_BASE, a lone node like N1 on 127.77.11.1, so before and after share one run).
#
# What runs, all at the same time, each from a fresh data dir, only on 127.0.0.0/8:
#   pfdc      Postfix -> LMTP -> Dovecot (../shared/bench/setup_postfix_dovecot.sh, BASE=$RUN/pfdc)
#             SMTP 127.0.0.1:10525, IMAP :10543, POP3 :10510
#   N1        one `sirms node`, no router, users in node.toml         127.77.10.1:3025/3143/3110
#   N2        router 127.77.20.1:2525/2143/2110 (admin :7070) + node1 127.77.21.1 + node2 127.77.21.2,
#             local maildirs; u1..u50 homed on node1, u51..u100 on node2
#   N2_STORE  router 127.77.30.1 + node1 127.77.31.1 + node2 127.77.31.2 + storage 127.77.31.9:7400;
#             every user homed on the storage node
#   (N2 and N2_STORE keep one copy of each mailbox, `replicas = 1`, as the paper's N2 did.)
#   N2_REPL   router 127.77.50.1 + node1 127.77.51.1 + node2 127.77.51.2, `replicas = 2`: u1..u50 homed
#             on node1 with their replica on node2, u51..u100 the other way round
# Clients connect from 16 source addresses 127.77.1.1-8 and 127.77.2.1-8 (round robin, bench/mbench.py);
# both routers send 127.77.1.0/24 to node1 and 127.77.2.0/24 to node2 (the paper's static policy).
# Results: bench/results/<stamp>-<phase>-{n<N>,fetch}.json, <stamp>-tables.md, docs/benchmarks-fig7.png.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-/work/shared/bench}
STAMP=$(date +%Y%m%d-%H%M%S)
RUN=${RUN:-/tmp/sirms-bench-$STAMP}
RESULTS=$HERE/results
TOKEN=bench-token-$STAMP

SIZES=${SIZES:-100:2,1000:2,10000:1}
CONC=${CONC:-1,16}
FETCH_REPEAT=${FETCH_REPEAT:-2}
FETCH_COUNT=${FETCH_COUNT:-1000}
CPU_QUOTA=${CPU_QUOTA:-25}
LIMITED_PFDC=${LIMITED_PFDC:-0}
QUIET_WAIT=${QUIET_WAIT:-8}
QUIET_MAX_CORES=${QUIET_MAX_CORES:-0.5}
BENCH_CLIENT=${BENCH_CLIENT:-mailbench}
FETCH=1
PHASES="main limited"
REPLICATED_ONLY=0

for arg in "$@"; do
  case $arg in
    --full) SIZES=$SIZES,100000:1 ;;
    --quick) SIZES=100:1,1000:1; FETCH_REPEAT=1; PHASES=main ;;
    --no-limited) PHASES=main ;;
    --limited-only) PHASES=limited ;;
    --router-overhead) PHASES=overhead; SIZES=${OVERHEAD_SIZES:-2000:3}; FETCH_REPEAT=3 ;;
    --router-own-cpu) ROUTER_CPUS=1; NODE_CPUS=0; CLIENT_CPUS=0 ;;
    --client=*) BENCH_CLIENT=${arg#--client=} ;;
    --deliver-only) FETCH=0 ;;
    --replicated) REPLICATED_ONLY=1; FETCH=0; SIZES=${REPLICATED_SIZES:-10000:1} ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
[[ $BENCH_CLIENT == mailbench || $BENCH_CLIENT == sirms ]] || { echo "BENCH_CLIENT/--client: mailbench or sirms, not $BENCH_CLIENT" >&2; exit 2; }

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ------------------------------------------------------------------ build
if [[ -z ${SIRMS:-} ]]; then
  SIRMS=$ROOT/target/bench/release/sirms
  if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building sirms (release, CARGO_TARGET_DIR=$ROOT/target/bench)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target/bench nice cargo build --release --bin sirms)
  fi
fi
[[ -x $SIRMS ]] || { echo "no sirms binary at $SIRMS" >&2; exit 1; }

mkdir -p "$RUN" "$RESULTS"
chmod 755 "$RUN"
log "run dir $RUN, results in $RESULTS, sirms $SIRMS ($("$SIRMS" --version))${BASELINE_SIRMS:+, baseline $BASELINE_SIRMS}"

# ------------------------------------------------------------------ process bookkeeping
PIDS=()        # every sirms process we started
MB_PID=""      # the running mailbench
CGROUPS=()     # every cgroup we created
CG_ROOT=/sys/fs/cgroup/cpu     # cgroup v1 cpu controller (this machine); v2 handled below
CG_V2=""
if [[ ! -w $CG_ROOT ]]; then
  if [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG_ROOT=/sys/fs/cgroup; CG_V2=1
  else
    CG_ROOT=""
  fi
fi

CG=""
make_cgroup() {   # make_cgroup NAME -> sets CG to a new cgroup dir limited to CPU_QUOTA % of one CPU
  local dir=$CG_ROOT/sirms-bench-$STAMP-$1
  mkdir -p "$dir"
  if [[ -n $CG_V2 ]]; then
    echo "$((CPU_QUOTA * 1000)) 100000" >"$dir/cpu.max"
  else
    echo 100000 >"$dir/cpu.cfs_period_us"
    echo $((CPU_QUOTA * 1000)) >"$dir/cpu.cfs_quota_us"
  fi
  CGROUPS+=("$dir")
  CG=$dir
}

# pinned CPUS CMD...: CMD on the CPU list CPUS (taskset), or unpinned when CPUS is empty
pinned() {
  local cpus=$1; shift
  if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

start_role() {   # start_role NAME CGROUP|"" ARGS... ; pid file $RUN/pids/NAME.pid; binary $ROLE_BIN or $SIRMS;
                 # pinned to $ROLE_CPUS when set
  local name=$1 cg=$2 bin=${ROLE_BIN:-$SIRMS}; shift 2
  if [[ -n ${ROLE_CPUS:-} ]]; then set -- -c "$ROLE_CPUS" "$bin" "$@"; bin=taskset; fi
  mkdir -p "$RUN/pids" "$RUN/logs"
  if [[ -n $cg ]]; then
    # join the cgroup first, then exec: the server and its threads are born inside it
    sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$bin" "$@" \
      >"$RUN/logs/$name.log" 2>&1 </dev/null &
  else
    "$bin" "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  fi
  local pid=$!
  echo "$pid" >"$RUN/pids/$name.pid"
  PIDS+=("$pid")
}

stop_sirms() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid did not stop in 10 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

stop_pfdc() {
  [[ -d $RUN/pfdc ]] || return 0
  BASE=$RUN/pfdc timeout 60 "$SHARED/stop_postfix_dovecot.sh" >/dev/null 2>&1 || log "warning: stopping postfix/dovecot failed"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping everything this run started"
  if [[ -n $MB_PID ]] && kill -0 "$MB_PID" 2>/dev/null; then kill -TERM "$MB_PID" 2>/dev/null || true; wait "$MB_PID" 2>/dev/null || true; fi
  stop_sirms
  stop_pfdc
  local cg
  for cg in "${CGROUPS[@]}"; do
    # anything left inside (there should be nothing) goes back to the root group first
    if [[ -f $cg/cgroup.procs ]]; then
      while read -r p; do echo "$p" >"$CG_ROOT/cgroup.procs" 2>/dev/null || true; done <"$cg/cgroup.procs"
    fi
    rmdir "$cg" 2>/dev/null || true
  done
  if [[ ${KEEP:-0} != 1 && $rc == 0 ]]; then rm -rf "$RUN"; else log "data and logs kept in $RUN"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {   # wait_port HOST PORT [SECONDS]
  local i
  for i in $(seq 1 $((${3:-30} * 10))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1:$2 after ${3:-30} s" >&2
  return 1
}

ctl() {   # ctl ADMIN_ADDR ARGS...
  local admin=$1; shift
  timeout 60 "$SIRMS" ctl --router "http://$admin" --token "$TOKEN" "$@"
}

# ------------------------------------------------------------------ configs
PASSWORD_HASH=""

node_toml() {   # node_toml FILE ID IP DATA [cluster ROUTER_ADMIN] ; users in the file only without a router
  local file=$1 id=$2 ip=$3 data=$4 router=${5:-}
  cat >"$file" <<EOF
hostname = "$id.bench.sirms.test"
data_dir = "$data"
trusted_proxies = ["127.0.0.1"]
allow_plaintext_auth = true

[listen]
smtp = "$ip:3025"
submission = "$ip:3587"
submissions = "$ip:3465"
imap = "$ip:3143"
imaps = "$ip:3993"
pop3 = "$ip:3110"
pop3s = "$ip:3995"

[limits]
max_connections = 5000
max_connections_per_ip = 1000
EOF
  if [[ -n $router ]]; then
    cat >>"$file" <<EOF

[cluster]
router = "http://$router"
node_id = "$id"
token = "$TOKEN"
store_listen = "$ip:7401"
EOF
  else
    {
      echo
      echo "[directory]"
      echo 'domains = ["example.test"]'
      echo "users = ["
      for i in $(seq 1 100); do echo "  { address = \"u$i@example.test\", password = \"$PASSWORD_HASH\" },"; done
      echo "]"
    } >>"$file"
  fi
}

router_toml() {   # router_toml FILE IP DATA [REPLICAS]
  cat >"$1" <<EOF
data_dir = "$3"
token = "$TOKEN"
admin_listen = "$2:7070"
health_interval_secs = 1
replicas = ${4:-1}

[listen]
smtp = "$2:2525"
submission = "$2:2587"
submissions = "$2:2465"
imap = "$2:2143"
imaps = "$2:2993"
pop3 = "$2:2110"
pop3s = "$2:2995"
EOF
}

wait_registered() {   # wait_registered ADMIN NODE... : every node listed by `ctl nodes list`
  local admin=$1; shift
  local n out
  for _ in $(seq 1 300); do
    out=$(ctl "$admin" nodes list 2>/dev/null || true)
    local missing=0
    for n in "$@"; do grep -qw "$n" <<<"$out" || missing=1; done
    ((missing)) || return 0
    sleep 0.2
  done
  echo "nodes $* did not register with $admin; got: $out" >&2
  return 1
}

add_users() {   # add_users ADMIN HOME_FOR_1_50 HOME_FOR_51_100
  local admin=$1 i home
  ctl "$admin" domains add example.test >/dev/null
  for i in $(seq 1 100); do
    if ((i <= 50)); then home=$2; else home=$3; fi
    ctl "$admin" users add "u$i@example.test" --password pw --home "$home" >/dev/null
  done
}

# start_sirms PHASE : all three SIRMS configurations, each from a fresh data dir
start_sirms() {
  local phase=$1 d=$RUN/$1 limit=""
  [[ $phase == limited ]] && limit=1
  mkdir -p "$d"
  local cg_n1="" cg_a1="" cg_a2="" cg_b1="" cg_b2="" cg_bs="" cg_r1="" cg_r2=""
  if [[ -n $limit ]]; then
    make_cgroup n1-node; cg_n1=$CG
    make_cgroup n2r-node1; cg_r1=$CG; make_cgroup n2r-node2; cg_r2=$CG
    make_cgroup n2-node1; cg_a1=$CG; make_cgroup n2-node2; cg_a2=$CG
    make_cgroup n2s-node1; cg_b1=$CG; make_cgroup n2s-node2; cg_b2=$CG; make_cgroup n2s-storage; cg_bs=$CG
  fi
  # N1
  node_toml "$d/n1-node.toml" node1 127.77.10.1 "$d/n1/node1"
  start_role "$phase-n1-node" "$cg_n1" node -c "$d/n1-node.toml"
  if [[ -n ${BASELINE_SIRMS:-} ]]; then
    local cg_base=""
    [[ -n $limit ]] && { make_cgroup n1base-node; cg_base=$CG; }
    node_toml "$d/n1base-node.toml" node1 127.77.11.1 "$d/n1base/node1"
    ROLE_BIN=$BASELINE_SIRMS start_role "$phase-n1base-node" "$cg_base" node -c "$d/n1base-node.toml"
  fi
  local admins=() ready=()
  if [[ $REPLICATED_ONLY == 0 ]]; then
    # N2
    router_toml "$d/n2-router.toml" 127.77.20.1 "$d/n2/router"
    start_role "$phase-n2-router" "" router -c "$d/n2-router.toml"
    # N2_STORE
    router_toml "$d/n2s-router.toml" 127.77.30.1 "$d/n2s/router"
    start_role "$phase-n2s-router" "" router -c "$d/n2s-router.toml"
    start_role "$phase-n2s-storage" "$cg_bs" storage --listen 127.77.31.9:7400 --data-dir "$d/n2s/storage" --token "$TOKEN"
    wait_port 127.77.20.1 7070
    wait_port 127.77.30.1 7070
    node_toml "$d/n2-node1.toml" node1 127.77.21.1 "$d/n2/node1" 127.77.20.1:7070
    node_toml "$d/n2-node2.toml" node2 127.77.21.2 "$d/n2/node2" 127.77.20.1:7070
    node_toml "$d/n2s-node1.toml" node1 127.77.31.1 "$d/n2s/node1" 127.77.30.1:7070
    node_toml "$d/n2s-node2.toml" node2 127.77.31.2 "$d/n2s/node2" 127.77.30.1:7070
    start_role "$phase-n2-node1" "$cg_a1" node -c "$d/n2-node1.toml"
    start_role "$phase-n2-node2" "$cg_a2" node -c "$d/n2-node2.toml"
    start_role "$phase-n2s-node1" "$cg_b1" node -c "$d/n2s-node1.toml"
    start_role "$phase-n2s-node2" "$cg_b2" node -c "$d/n2s-node2.toml"
    wait_port 127.77.31.9 7400
    ctl 127.77.30.1:7070 nodes add store1 127.77.31.9 --storage-only --store http://127.77.31.9:7400 >/dev/null
    wait_registered 127.77.20.1:7070 node1 node2
    wait_registered 127.77.30.1:7070 node1 node2 store1
    admins+=(127.77.20.1:7070 127.77.30.1:7070)
    ready+=(127.77.20.1:2525,127.77.20.1:2143 127.77.30.1:2525,127.77.30.1:2143)
  fi
  # N2_REPL: every mailbox on both nodes
  router_toml "$d/n2r-router.toml" 127.77.50.1 "$d/n2r/router" 2
  start_role "$phase-n2r-router" "" router -c "$d/n2r-router.toml"
  wait_port 127.77.50.1 7070
  node_toml "$d/n2r-node1.toml" node1 127.77.51.1 "$d/n2r/node1" 127.77.50.1:7070
  node_toml "$d/n2r-node2.toml" node2 127.77.51.2 "$d/n2r/node2" 127.77.50.1:7070
  start_role "$phase-n2r-node1" "$cg_r1" node -c "$d/n2r-node1.toml"
  start_role "$phase-n2r-node2" "$cg_r2" node -c "$d/n2r-node2.toml"
  wait_registered 127.77.50.1:7070 node1 node2
  admins+=(127.77.50.1:7070)
  ready+=(127.77.50.1:2525,127.77.50.1:2143)
  local admin
  for admin in "${admins[@]}"; do
    ctl "$admin" routes add 127.77.1.0/24 node1 >/dev/null
    ctl "$admin" routes add 127.77.2.0/24 node2 >/dev/null
  done
  log "$phase: provisioning 100 users on each cluster (argon2 hashes by sirms ctl)"
  local provisioning=()
  if [[ $REPLICATED_ONLY == 0 ]]; then
    add_users 127.77.20.1:7070 node1 node2 &
    provisioning+=($!)
    add_users 127.77.30.1:7070 store1 store1 &
    provisioning+=($!)
  fi
  add_users 127.77.50.1:7070 node1 node2 &
  provisioning+=($!)
  local p
  for p in "${provisioning[@]}"; do wait "$p"; done
  for admin in "${admins[@]}"; do
    ctl "$admin" routes test 127.77.1.1 | sed "s/^/  $admin 127.77.1.1: /" >&2
    ctl "$admin" routes test 127.77.2.1 | sed "s/^/  $admin 127.77.2.1: /" >&2
  done
  ctl 127.77.50.1:7070 users show u1@example.test | sed "s/^/  N2_REPL u1: /" >&2
  # Every target answers for u1 and u100 from both source halves (directory has reached the nodes).
  python3 "$HERE/ready.py" 60 127.77.10.1:3025,127.77.10.1:3143 "${ready[@]}" \
    ${BASELINE_SIRMS:+127.77.11.1:3025,127.77.11.1:3143}
}

# start_overhead: one node joined to a router; the same node is a target directly and
# through the router, so the only difference between the two is the router's hop.
start_overhead() {
  local d=$RUN/overhead
  mkdir -p "$d"
  router_toml "$d/router.toml" 127.77.40.1 "$d/router"
  ROLE_CPUS=${ROUTER_CPUS:-} start_role overhead-router "" router -c "$d/router.toml"
  wait_port 127.77.40.1 7070
  node_toml "$d/node1.toml" node1 127.77.41.1 "$d/node1" 127.77.40.1:7070
  ROLE_CPUS=${NODE_CPUS:-} start_role overhead-node1 "" node -c "$d/node1.toml"
  wait_registered 127.77.40.1:7070 node1
  log "overhead: provisioning 100 users homed on node1"
  add_users 127.77.40.1:7070 node1 node1
  python3 "$HERE/ready.py" 60 127.77.41.1:3025,127.77.41.1:3143 127.77.40.1:2525,127.77.40.1:2143
}

run_overhead() {
  local targets=(
    --target "name=direct,smtp=127.77.41.1:3025,imap=127.77.41.1:3143,pop3=127.77.41.1:3110$(pidspec overhead node1)"
    --target "name=router,smtp=127.77.40.1:2525,imap=127.77.40.1:2143,pop3=127.77.40.1:2110$(pidspec overhead router node1)"
  )
  local common=(--sources "$SOURCES" --conc "$CONC" --quiet-wait "$QUIET_WAIT" --quiet-max-cores "$QUIET_MAX_CORES"
                --fetch-count "$FETCH_COUNT" --max-est-s 100000)
  local spec n rep
  for spec in ${SIZES//,/ }; do
    n=${spec%%:*}; rep=${spec#*:}; [[ $rep == "$spec" ]] && rep=1
    log "overhead: deliver N=$n, C=$CONC, $rep repeat(s), client $BENCH_CLIENT"
    deliver overhead "n$n" "$n" "$rep" "${targets[@]}"
  done
  [[ $FETCH == 1 ]] || return 0
  log "overhead: imap + pop3 fetch of $FETCH_COUNT messages, $FETCH_REPEAT repeat(s)"
  mailbench overhead fetch "${targets[@]}" "${common[@]}" --tests imap,pop3 --repeat "$FETCH_REPEAT"
}

start_pfdc() {
  log "starting Postfix + Dovecot (BASE=$RUN/pfdc)"
  BASE=$RUN/pfdc SMTP_PORT=10525 IMAP_PORT=10543 POP3_PORT=10510 WIPE=1 \
    timeout 900 "$SHARED/setup_postfix_dovecot.sh" >"$RUN/pfdc-setup.log" 2>&1 \
    || { cat "$RUN/pfdc-setup.log" >&2; return 1; }
  python3 "$HERE/ready.py" 60 127.0.0.1:10525,127.0.0.1:10543
}

# limit_pfdc: move the running Postfix and Dovecot process trees into one CPU-limited cgroup
# (processes they spawn later inherit it)
limit_pfdc() {
  make_cgroup pfdc
  local cg=$CG
  local roots
  roots="$(tr -d ' ' <"$RUN/pfdc/postfix-queue/pid/master.pid") $(cat "$RUN/pfdc/dovecot-run/master.pid")"
  python3 - "$cg" $roots <<'EOF'
import os, sys
cg, roots = sys.argv[1], {int(x) for x in sys.argv[2:]}
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        kids.setdefault(int(s[s.rindex(")") + 2:].split()[1]), []).append(int(d))
todo, moved = list(roots), 0
while todo:
    p = todo.pop()
    todo += kids.get(p, [])
    try:
        open(cg + "/cgroup.procs", "w").write(str(p))
        moved += 1
    except OSError:
        pass
print("moved %d postfix/dovecot processes into %s" % (moved, cg), file=sys.stderr)
EOF
}

pidspec() {   # pidspec PHASE ROLE... -> ,pid=ROLE:FILE...
  local phase=$1 r; shift
  for r in "$@"; do printf ',pid=%s:%s' "${r#*-}" "$RUN/pids/$phase-$r.pid"; done
}

SOURCES=$(for i in $(seq 1 8); do printf '127.77.1.%d,127.77.2.%d,' "$i" "$i"; done)
SOURCES=${SOURCES%,}

mailbench() {   # mailbench PHASE OUTNAME ARGS... : runs in the background so a signal stops it at once
  local phase=$1 out=$2; shift 2
  pinned "${CLIENT_CPUS:-}" python3 "$HERE/mbench.py" "$@" --out "$RESULTS/$STAMP-$phase-$out.json" \
    > >(tee -a "$RUN/mailbench-$phase.log" >&2) 2>&1 &
  MB_PID=$!
  wait "$MB_PID"
  MB_PID=""
}

# deliver PHASE OUTNAME N REPEATS --target SPEC... : the deliver test with the chosen client (mailbench also
# gets the caller's `common` options)
deliver() {
  local phase=$1 out=$2 n=$3 rep=$4; shift 4
  if [[ $BENCH_CLIENT == sirms ]]; then
    sirms_deliver "$phase" "$out" "$n" "$rep" "$@"
  else
    mailbench "$phase" "$out" "$@" "${common[@]}" --tests deliver --sizes "$n" --repeat "$rep"
  fi
}

# sirms_deliver PHASE OUTNAME N REPEATS --target SPEC... : `sirms bench smtp` in mailbench's order (each C,
# each repeat, the targets in turn), with mailbench's method: mailboxes emptied, sessions opened and the
# INBOX counts read before the clock, 1 s of rest, the quiet wait, then N messages of 4096 bytes to random
# users among u1..u100 (the same for every target), one SMTP session per message, from $SOURCES round
# robin, timed to the last 250 and until every message is in its INBOX. The per-run JSON reports are
# gathered into $RESULTS/$STAMP-PHASE-OUTNAME.json in mailbench's layout, for report.py and plot.py.
sirms_deliver() {
  local phase=$1 out=$2 n=$3 rep=$4; shift 4
  local specs=()
  while (($# >= 2)); do
    [[ $1 == --target ]] && specs+=("$2")
    shift 2
  done
  local dir=$RUN/sirms-bench/$phase-$out
  mkdir -p "$dir"
  local c r spec part name smtp imap pid rc i=0
  for c in ${CONC//,/ }; do
    for ((r = 0; r < rep; r++)); do
      for spec in "${specs[@]}"; do
        local pids=()
        name=target smtp="" imap=""
        IFS=, read -ra parts <<<"$spec"
        for part in "${parts[@]}"; do
          case $part in
            name=*) name=${part#name=} ;;
            smtp=*) smtp=${part#smtp=} ;;
            imap=*) imap=${part#imap=} ;;
            pid=*) pid=${part#pid=}; pids+=(--server-pid "${pid%%:*}=${pid#*:}") ;;
          esac
        done
        i=$((i + 1))
        log "$phase: sirms bench smtp: $name N=$n C=$c repeat $r"
        rc=0
        pinned "${CLIENT_CPUS:-}" "$SIRMS" bench smtp --target "$smtp" --imap "$imap" --password pw --reset --users 100 \
          --rcpt 'u{i}@example.test' -n "$n" -c "$c" --size 4096 --msgs-per-conn 1 --sources "$SOURCES" \
          --seed $((n * 1000 + c * 10 + r + 1)) --settle 1 --quiet-wait "$QUIET_WAIT" \
          --quiet-max-cores "$QUIET_MAX_CORES" --name "$name" "${pids[@]}" \
          --out "$(printf '%s/%03d-c%d-r%d-%s.json' "$dir" "$i" "$c" "$r" "$name")" \
          > >(tee -a "$RUN/sirms-bench-$phase.log" >&2) 2>&1 &
        MB_PID=$!
        wait "$MB_PID" || rc=$?
        MB_PID=""
        # 1: the run finished with failures (they are in its report); anything else: it did not run.
        if ((rc > 1)); then log "sirms bench smtp failed (exit $rc); see $RUN/sirms-bench-$phase.log"; return 1; fi
      done
    done
  done
  python3 - "$RESULTS/$STAMP-$phase-$out.json" "$dir"/*.json <<'EOF'
import json, os, re, sys
out, files = sys.argv[1], sys.argv[2:]
results = []
for f in files:
    with open(f) as fh:
        r = json.load(fh)
    # mailbench's names: "target" is the label, "delivered" says whether every message arrived
    r["address"], r["target"] = r["target"], r.get("name") or r["target"]
    r["rep"] = int(re.search(r"-r(\d+)-", os.path.basename(f)).group(1))
    r["delivered_count"], r["delivered"] = r["delivered"], bool(r["all_delivered"])
    q = r.get("quiet_wait")
    r["pre_run_quiet_wait_s_busy_cores"] = [q["waited_s"], q["busy_cores"]] if q else None
    results.append(r)
meta = {"client": "sirms bench smtp", "ncpu": os.cpu_count(), "files": files}
with open(out, "w") as fh:
    json.dump({"meta": meta, "results": results}, fh, indent=1)
EOF
}

run_matrix() {   # run_matrix PHASE
  local phase=$1
  local pf_pids=",pid=postfix:$RUN/pfdc/postfix-queue/pid/master.pid,pid=dovecot:$RUN/pfdc/dovecot-run/master.pid"
  local targets=()
  if [[ $phase == main || $LIMITED_PFDC == 1 ]]; then
    targets+=(--target "name=pfdc,smtp=127.0.0.1:10525,imap=127.0.0.1:10543,pop3=127.0.0.1:10510$pf_pids")
  fi
  if [[ -n ${BASELINE_SIRMS:-} ]]; then
    targets+=(--target "name=N1_BASE,smtp=127.77.11.1:3025,imap=127.77.11.1:3143,pop3=127.77.11.1:3110$(pidspec "$phase" n1base-node)")
  fi
  targets+=(--target "name=N1,smtp=127.77.10.1:3025,imap=127.77.10.1:3143,pop3=127.77.10.1:3110$(pidspec "$phase" n1-node)")
  if [[ $REPLICATED_ONLY == 0 ]]; then
    targets+=(
      --target "name=N2,smtp=127.77.20.1:2525,imap=127.77.20.1:2143,pop3=127.77.20.1:2110$(pidspec "$phase" n2-router n2-node1 n2-node2)"
      --target "name=N2_STORE,smtp=127.77.30.1:2525,imap=127.77.30.1:2143,pop3=127.77.30.1:2110$(pidspec "$phase" n2s-router n2s-node1 n2s-node2 n2s-storage)"
    )
  fi
  targets+=(--target "name=N2_REPL,smtp=127.77.50.1:2525,imap=127.77.50.1:2143,pop3=127.77.50.1:2110$(pidspec "$phase" n2r-router n2r-node1 n2r-node2)")
  local common=(--sources "$SOURCES" --conc "$CONC" --quiet-wait "$QUIET_WAIT" --quiet-max-cores "$QUIET_MAX_CORES"
                --fetch-count "$FETCH_COUNT" --max-est-s 100000)
  local spec n rep
  for spec in ${SIZES//,/ }; do
    n=${spec%%:*}; rep=${spec#*:}; [[ $rep == "$spec" ]] && rep=1
    log "$phase: deliver N=$n, C=$CONC, $rep repeat(s), client $BENCH_CLIENT"
    deliver "$phase" "n$n" "$n" "$rep" "${targets[@]}"
    if [[ $FETCH == 1 && $spec == "${SIZES%%,*}" ]]; then
      log "$phase: imap + pop3 fetch of $FETCH_COUNT messages, $FETCH_REPEAT repeat(s)"
      mailbench "$phase" fetch "${targets[@]}" "${common[@]}" --tests imap,pop3 --repeat "$FETCH_REPEAT"
    fi
  done
}

# ------------------------------------------------------------------ run
T0=$SECONDS
PASSWORD_HASH=$(echo pw | "$SIRMS" hash-password)
if [[ $PHASES == overhead ]]; then
  start_overhead
  run_overhead
  {
    echo "machine: $(nproc) CPUs, kernel $(uname -r); run $STAMP, $(( (SECONDS - T0) / 60 )) min, sirms from $(cd "$ROOT" && git describe --always --dirty 2>/dev/null)"
    echo
    python3 "$HERE/overhead.py" "$RESULTS/$STAMP"
  } >"$RESULTS/$STAMP-overhead.md"
  cat "$RESULTS/$STAMP-overhead.md"
  log "done in $(( (SECONDS - T0) / 60 )) min"
  exit 0
fi
start_pfdc
for phase in $PHASES; do
  if [[ $phase == limited ]]; then
    [[ -n $CG_ROOT ]] || { log "no writable cgroup cpu controller: skipping the CPU-limited phase"; continue; }
    stop_sirms
    [[ $LIMITED_PFDC == 1 ]] && limit_pfdc
    log "limited phase: every SIRMS mail node and the storage node at $CPU_QUOTA% of one CPU each (routers unlimited)"
  fi
  log "$phase: starting SIRMS N1, N2, N2_STORE, N2_REPL"
  start_sirms "$phase"
  run_matrix "$phase"
done
{
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(findmnt -no FSTYPE,OPTIONS -T "$RUN" | cut -c1-60)"
  echo "run: $STAMP, $(( (SECONDS - T0) / 60 )) min, CPU_QUOTA=$CPU_QUOTA%, sirms built from $(cd "$ROOT" && git describe --always --dirty 2>/dev/null) (binary of $(date -r "$SIRMS" +%F\ %T))"
  echo
  CPU_QUOTA=$CPU_QUOTA python3 "$HERE/report.py" "$RESULTS/$STAMP"
} >"$RESULTS/$STAMP-tables.md"
log "tables: $RESULTS/$STAMP-tables.md"
python3 "$HERE/plot.py" "$RESULTS/$STAMP" "$ROOT/docs/benchmarks-fig7.png" "$CPU_QUOTA%" || log "warning: plot failed"
log "done in $(( (SECONDS - T0) / 60 )) min"
