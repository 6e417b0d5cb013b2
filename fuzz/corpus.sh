#!/usr/bin/env bash
# The grown fuzz corpora live outside git, in fuzz/corpus/<target>/ (ignored). This keeps them:
#
#   fuzz/corpus.sh cmin [TARGET…]   minimise each corpus in place (cargo fuzz cmin), every target
#                                   by default; the seeds in fuzz/seeds/ are never touched
#   fuzz/corpus.sh save FILE        pack fuzz/corpus/ into FILE (.tar.gz), e.g. a release asset
#                                   or a CI cache directory
#   fuzz/corpus.sh restore FILE     unpack FILE into fuzz/corpus/, adding to what is there
#
# Inputs are named by their SHA-1, so restoring over an existing corpus only adds.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/../target/fuzz}"

case "${1:-}" in
  cmin)
    shift
    targets="${*:-$(cargo +nightly fuzz list)}"
    for target in $targets; do
      [ -d "corpus/$target" ] || continue
      before=$(find "corpus/$target" -type f | wc -l)
      cargo +nightly fuzz cmin -O "$target" "corpus/$target" -- -rss_limit_mb=2048 -timeout=30 >"/tmp/cmin-$target.log" 2>&1 ||
        { tail -n 20 "/tmp/cmin-$target.log"; exit 1; }
      echo "$target: $before -> $(find "corpus/$target" -type f | wc -l) inputs"
    done
    ;;
  save)
    [ -n "${2:-}" ] || { echo "usage: $0 save FILE.tar.gz" >&2; exit 2; }
    out=$(realpath -m "$2")
    tar -czf "$out" corpus
    echo "$(find corpus -type f | wc -l) inputs in $out ($(du -h "$out" | cut -f1))"
    ;;
  restore)
    [ -n "${2:-}" ] || { echo "usage: $0 restore FILE.tar.gz" >&2; exit 2; }
    tar -xzf "$(realpath "$2")"
    echo "$(find corpus -type f | wc -l) inputs in fuzz/corpus/"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
