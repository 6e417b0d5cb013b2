#!/usr/bin/env bash
# Shows that the power-loss test has teeth: runs it once with each named fsync skipped
# (SIRMS_TEST_SKIP_FSYNC, debug builds only) and says whether it failed, as it must.
# Usage: integration-tests/power-loss-teeth.sh [NAME...]   (default: all of them, then "all")
# Takes about a minute a name. Not run by CI: the plain test is.
set -uo pipefail
cd "$(dirname "$0")/.."
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(all commit-data commit-dir flags-dir store-file store-file-dir store-dirs setup-dirs
         spool-msg spool-msg-dir spool-env spool-env-dir directory-cache directory-cache-dir)
fi
cargo build --bin sirms -q || exit 1
cargo test -p sirms-integration-tests --test power_loss --no-run -q || exit 1
for name in "${names[@]}"; do
  log=$(mktemp)
  if SIRMS_TEST_SKIP_FSYNC="$name" cargo test -q -p sirms-integration-tests --test power_loss -- --nocapture >"$log" 2>&1; then
    echo "$name: NOT CAUGHT (the test passed without it)"
  else
    echo "$name: caught"
    sed -n '/^lost after a power cut:/,/^$/p' "$log" | sed '1d;/^$/d' | cut -c1-200 | sed 's/^/    /'
    grep -q "^lost after a power cut:" "$log" || grep -m1 -A2 "panicked" "$log" | cut -c1-200 | sed 's/^/    /'
  fi
  rm -f "$log"
done
