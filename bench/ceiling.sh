#!/usr/bin/env bash
# The SMTP ceiling of this machine: Postfix's smtp-sink, which answers every command and stores
# nothing, driven by Postfix's smtp-source and by `sirms bench smtp` (the deliver test's clients
# see the same kind of server cost: none). Issue 9 asks for SIRMS's delivered msgs/s as a fraction
# of this ceiling.
#
#   bench/ceiling.sh            # N=30000 per run, C = 1 and 16, 3 repeats; ~2 min
#
# Knobs: N [30000] CONC ["1 16"] REPEAT [3] SIRMS (binary; default target/bench/release/sirms).
# Listens on 127.77.50.1:2525 only. Needs smtp-sink and smtp-source (package postfix; bench/run.sh's
# baseline installs it). Prints one markdown table row per (client, C): median msgs/s [min-max].
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${N:-30000}
CONC=${CONC:-1 16}
REPEAT=${REPEAT:-3}
SIRMS=${SIRMS:-$ROOT/target/bench/release/sirms}
ADDR=127.77.50.1
PORT=2525
SIZE=4096

for tool in smtp-sink smtp-source; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "$tool missing (apt-get install postfix)" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin
[[ -x $SIRMS ]] || { echo "no sirms binary at $SIRMS (cargo build --release, or SIRMS=path)" >&2; exit 1; }

# -c: count sessions; backlog 256; as root it must drop to a user (-u). Stopped at exit.
sink_user=()
[[ $(id -u) == 0 ]] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -c "$ADDR:$PORT" 256 >/dev/null &
SINK=$!
trap 'kill $SINK 2>/dev/null; wait $SINK 2>/dev/null || true' EXIT
up=0
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[[ $up == 1 ]] || { echo "smtp-sink did not start on $ADDR:$PORT" >&2; exit 1; }

rate() {   # rate SECONDS -> msgs/s
  python3 -c "import sys; print('%.1f' % ($N / float(sys.argv[1])))" "$1"
}
median_row() {   # median_row LABEL C RATES...
  local label=$1 c=$2
  shift 2
  python3 - "$label" "$c" "$@" <<'EOF'
import statistics, sys
label, c, xs = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3:]]
print("| %s | %s | %.1f [%.1f-%.1f] |" % (label, c, statistics.median(xs), min(xs), max(xs)))
EOF
}

echo "machine: $(nproc) CPUs, kernel $(uname -r); N=$N messages of $SIZE bytes per run, one message per session, $REPEAT repeats"
echo
echo "| client → smtp-sink | C | msgs/s, median [min-max] |"
echo "|---|---:|---:|"
for c in $CONC; do
  source_rates=() sirms_rates=()
  for _ in $(seq 1 "$REPEAT"); do
    t0=$(date +%s.%N)
    smtp-source -4 -s "$c" -m "$N" -l "$SIZE" -M ceiling.test -f bench@example.test -t sink@example.test "$ADDR:$PORT"
    t1=$(date +%s.%N)
    source_rates+=("$(rate "$(python3 -c "print($t1 - $t0)")")")
    out=$("$SIRMS" bench smtp --target "$ADDR:$PORT" -n "$N" -c "$c" --size "$SIZE" --json)
    sirms_rates+=("$(python3 -c 'import json,sys; print(json.load(sys.stdin)["accept_msgs_per_s"])' <<<"$out")")
  done
  median_row "smtp-source (Postfix)" "$c" "${source_rates[@]}"
  median_row "sirms bench smtp" "$c" "${sirms_rates[@]}"
done
