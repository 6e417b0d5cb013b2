#!/usr/bin/env bash
# Idle IMAP connections held by one node (issue 9's goal: 10,000 in under 500 MB RSS).
#
#   bench/idle.sh [N]        # N connections (default 10000), from 127.0.10.1 upward
#
# Starts a node from SIRMS (default: target/bench/release/sirms, built if missing) on
# 127.0.0.1:15xxx with a fresh data dir, opens N IMAP connections that each wait for their
# greeting, prints the node's VmRSS, then times a new client's greeting and LOGIN.
# Needs an open-file hard limit above N on both sides (the node raises its soft limit).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${1:-10000}
SIRMS=${SIRMS:-$ROOT/target/bench/release/sirms}
if [[ ! -x $SIRMS ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target/bench cargo build --release --bin sirms)
fi
RUN=$(mktemp -d /tmp/sirms-idle.XXXXXX)
cat >"$RUN/node.toml" <<TOML
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
users = [ { address = "u1@example.test", password = "{plain}pw" } ]
TOML
RUST_LOG=warn "$SIRMS" node -c "$RUN/node.toml" >"$RUN/node.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$RUN"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/15143) 2>/dev/null && break; sleep 0.1; done
echo "node pid $PID, $(grep VmRSS /proc/$PID/status)"
python3 - "$N" "$PID" <<'PY'
import socket, sys, time
n, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    return [l for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0].split()[1]
socks, t = [], time.time()
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.%d.%d" % (10 + i // 250, 1 + i % 250), 0))
    s.connect(("127.0.0.1", 15143))
    socks.append(s)
greeted = sum(1 for s in socks if s.recv(100).startswith(b"* OK"))
print("%d connections, %d greeted, opened in %.1f s; node VmRSS %s kB" % (n, greeted, time.time() - t, rss()))
t = time.time()
c = socket.create_connection(("127.0.0.1", 15143))
f = c.makefile("rb")
f.readline()
c.sendall(b"a LOGIN u1@example.test pw\r\n")
reply = f.readline()
while not reply.startswith(b"a "):
    reply = f.readline()
print("a new client: greeting and LOGIN in %.1f ms (%s)" % ((time.time() - t) * 1000, reply[:4].decode()))
time.sleep(2)
print("after 2 s idle: node VmRSS %s kB" % rss())
PY
