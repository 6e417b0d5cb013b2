#!/usr/bin/env bash
# Idle IMAP sessions held by one node (issue 29's goal: 100,000 in IDLE under 1.5 GB, a new
# login still answered in under 50 ms; issue 9's was 10,000 greeted connections under 500 MB).
#
#   bench/idle.sh [N] [idle|greet]   # N sessions (default 10000), from 127.20.0.1 upward
#
# idle (the default): each session logs in as one of USERS users (default 1000, u1..),
# selects INBOX, which holds MSGS messages (default 20), and enters IDLE. greet: each
# connection only waits for its greeting.
# Starts a node from SIRMS (default: target/bench/release/sirms, built if missing) on
# 127.0.0.1:15xxx with a fresh data dir, prints the node's VmRSS before and after, then times
# a new client's greeting, LOGIN and SELECT. Raises the open-file limits itself (needs root
# for more than the hard limit allows).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${1:-10000}
MODE=${2:-idle}
USERS=${USERS:-1000}
MSGS=${MSGS:-20}
SIRMS=${SIRMS:-$ROOT/target/bench/release/sirms}
case $MODE in idle | greet) ;; *) echo "mode is idle or greet, not $MODE" >&2; exit 2 ;; esac
# Each session is a socket at both ends, and the client holds them all in one process.
want=$((N + 1000))
if (($(ulimit -Hn) < want)) && ! ulimit -Hn "$want" 2>/dev/null; then
  echo "$N sessions need $want open files in one process; the hard limit is $(ulimit -Hn) and" >&2
  echo "cannot be raised here (no CAP_SYS_RESOURCE): use N <= $(($(ulimit -Hn) - 1000))" >&2
  exit 2
fi
ulimit -n "$want"
if [[ ! -x $SIRMS ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target/bench cargo build --release --bin sirms)
fi
RUN=$(mktemp -d /tmp/sirms-idle.XXXXXX)
{
  cat <<TOML
hostname = "idle.example.test"
data_dir = "$RUN/data"
allow_plaintext_auth = true
[listen]
smtp = "127.0.0.1:15025"
submission = "127.0.0.1:15587"
submissions = "127.0.0.1:15465"
imap = "127.0.0.1:15143"
imaps = "127.0.0.1:15993"
pop3 = "127.0.0.1:15110"
pop3s = "127.0.0.1:15995"
[outbound]
smarthost = "127.0.0.9:9"
[limits]
max_connections = $((N + 100))
max_connections_per_ip = $((N + 100))
[directory]
domains = ["example.test"]
users = [
TOML
  for i in $(seq 1 "$USERS"); do echo "  { address = \"u$i@example.test\", password = \"{plain}pw\" },"; done
  echo "]"
} >"$RUN/node.toml"
RUST_LOG=warn "$SIRMS" node -c "$RUN/node.toml" >"$RUN/node.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$RUN"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/15143) 2>/dev/null && break; sleep 0.1; done
echo "node pid $PID ($SIRMS), $(grep VmRSS /proc/$PID/status)"
python3 "$HERE/idle.py" --sessions "$N" --mode "$MODE" --users "$USERS" --msgs "$MSGS" \
  --imap 127.0.0.1:15143 --smtp 127.0.0.1:15025 --pid "$PID"
