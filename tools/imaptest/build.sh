#!/usr/bin/env bash
# Builds imaptest (Dovecot's IMAP compliance and stress tester, MIT licensed: COPYING.MIT)
# from the source vendored here (imaptest-release-2.3.tar.gz: the dovecot/imaptest repository,
# branch release-2.3, commit 0de0dbfb, 2021-09-30) against Debian's dovecot-dev.
#
# Usage: build.sh [OUT_DIR]      (default: target/imaptest)
# Prints the path of the imaptest binary on its last line; its test scripts are in
# OUT_DIR/imaptest/src/tests. Idempotent: an existing build is reused. The packages it needs
# are in .ci/install-deps, which it runs when one is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../../target/imaptest}
BIN=$OUT/imaptest/src/imaptest
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
for p in dovecot-dev autoconf automake libtool pkg-config make gcc; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    bash "$HERE/../../.ci/install-deps" >/dev/null
    break
  fi
done
mkdir -p "$OUT"
rm -rf "$OUT/imaptest"
tar -xzf "$HERE/imaptest-release-2.3.tar.gz" -C "$OUT"
cd "$OUT/imaptest"
# Debian 12's libdovecot (2.3.19) takes a 4th argument (parser params) in imap_parser_create.
sed -i 's/imap_parser_create(\([^;]*\), (size_t)-1)/imap_parser_create(\1, (size_t)-1, NULL)/' \
  src/commands.c src/imap-client.c src/test-parser.c
./autogen.sh >/dev/null 2>&1
./configure --with-dovecot=/usr/lib/dovecot >/dev/null
make -j2 LDFLAGS="-Wl,-rpath,/usr/lib/dovecot" >/dev/null 2>&1
echo "$BIN"
