#!/usr/bin/env python3
"""Issue 29's IMAP read figures on a big mailbox: SIRMS (and, with BASELINE_SIRMS, a second
SIRMS binary) against Dovecot over the same message files, in one run, interleaved.

    bench/bigbox.py [--n 50000] [--rounds 3] [--sirms PATH]
    BASELINE_SIRMS=path/to/an/older/sirms bench/bigbox.py

The mailbox: N messages of about 2 KB (deterministic: varied Subject, From, To, Date, an
`X-Tag: t<i%10>` header, one in 97 with an RFC 2047 encoded-word Subject). The files are
generated once and hard-linked into each server's Maildir: SIRMS gets them in `cur/` under its
own names (`<unique>,U=<uid>,S=<size>:2,`, so its index is rebuilt from the listing), Dovecot
(the company harness, started here on its own BASE and ports) in its user's `cur/`.

Each round, for each target in turn (the order rotates per round):
  1. cold: SIRMS is restarted over a deleted index (`store/index/`: no index, no message cache);
     Dovecot's `dovecot.index*` files are deleted (its `dovecot-uidlist` is kept, as SIRMS keeps
     UIDs in file names; both rebuild their index from the directory listing on SELECT).
     One session: LOGIN+SELECT, `FETCH 1:* (ENVELOPE)`, `SEARCH SUBJECT` right after,
     `UID SEARCH HEADER X-Tag t7`, SELECT again, `FETCH 1:* (UID FLAGS)`.
  2. cold again; one session: LOGIN+SELECT, `UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)`
     (the cold structure fetch), then `FETCH 1:* (ENVELOPE)` (warm) and the two searches again.
Plain IMAP on loopback; the client is a raw socket reader (no per-line parsing), so its own
cost stays small and equal for all targets. Prints a table of medians (min–max) and writes
bench/results/bigbox-<stamp>.{json,md}.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The company harness, as bench/run.sh finds it.
HARNESS = os.environ.get("SHARED", "/work/shared/bench")
USER = "u1@example.test"
PASSWORD = "pw"
DC_BASE = "/tmp/sirms-bigbox-dovecot"
DC_PORT = 10443
SUBJECT_NEEDLE = "zebra"
TAG = "t7"

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
NAMES = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
         "Donald Knuth", "Frances Allen", "Ken Thompson", "Radia Perlman", "John McCarthy")


def message(i, rng):
    """The i-th message: CRLF lines, about 2 KB."""
    sender = rng.choice(NAMES)
    to = rng.choice(NAMES)
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    # One in 50 subjects has the needle SEARCH SUBJECT looks for.
    subject = f"bigbox {i} {words}" + (f" {SUBJECT_NEEDLE}" if i % 50 == 3 else "")
    if i % 97 == 5:
        subject = "=?UTF-8?B?" + __import__("base64").b64encode(f"grüße {subject}".encode()).decode() + "?="
    day = 1 + i % 28
    date = f"{['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][i % 7]}, {day:02d} Mar 2026 " \
           f"{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d} +0000"
    head = [
        f"Return-Path: <{sender.split()[0].lower()}@example.org>",
        f"Received: from mx{i % 7}.example.org by bigbox.test; {date}",
        f"Date: {date}",
        f'From: "{sender}" <{sender.split()[0].lower()}@example.org>',
        f'To: "{to}" <{to.split()[0].lower()}@example.test>',
        f"Subject: {subject}",
        f"Message-ID: <{i}.bigbox@example.org>",
        f"X-Tag: t{i % 10}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ]
    body = []
    size = sum(len(h) + 2 for h in head) + 2
    while size < 2048:
        line = " ".join(rng.choice(WORDS) for _ in range(10))
        body.append(line)
        size += len(line) + 2
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()


def generate(pool, n):
    """The N message files in `pool` (kept between runs: generation is deterministic)."""
    stamp = os.path.join(pool, f".complete-{n}")
    if os.path.exists(stamp):
        return sorted(f for f in os.listdir(pool) if not f.startswith("."))
    shutil.rmtree(pool, ignore_errors=True)
    os.makedirs(pool)
    rng = random.Random(29)
    names = []
    for i in range(n):
        raw = message(i, rng)
        name = f"{1770000000 + i}.M{i}P29Q1.bigbox,U={i + 1},S={len(raw)}:2,"
        path = os.path.join(pool, name)
        with open(path, "wb") as f:
            f.write(raw)
        os.utime(path, (1770000000 + i * 60, 1770000000 + i * 60))
        names.append(name)
    open(stamp, "w").close()
    return sorted(names)


class Client:
    """A minimal IMAP client: sends a command, reads until its tagged completion."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=600)
        self.n = 0
        self.buf = bytearray()
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        self.buf.clear()

    def cmd(self, text):
        """Runs `text`; returns (seconds, response bytes)."""
        self.n += 1
        tag = f"b{self.n}".encode()
        start = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        buf = bytearray()
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"connection closed during {text!r}")
            buf += chunk
            if not buf.endswith(b"\r\n"):
                continue
            at = buf.rfind(b"\r\n", 0, len(buf) - 2)
            line = bytes(buf[at + 2:] if at >= 0 else buf)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line[:200]!r}")
                return time.perf_counter() - start, bytes(buf)

    def close(self):
        try:
            self.cmd("LOGOUT")
        except (RuntimeError, OSError):
            pass
        self.sock.close()


def wait_port(host, port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class Sirms:
    """One `sirms node` over its own data dir on its own loopback address."""

    def __init__(self, name, binary, ip, run, names, pool, password_hash):
        self.name, self.binary, self.ip = name, binary, ip
        self.data = os.path.join(run, name)
        self.proc = None
        box = os.path.join(self.data, "store", "mail", "u1@example%2Etest")
        for d in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(box, d), exist_ok=True)
        for f in names:
            os.link(os.path.join(pool, f), os.path.join(box, "cur", f))
        self.config = os.path.join(run, f"{name}.toml")
        listen = "\n".join(f'{k} = "{ip}:{p}"' for k, p in
                           (("smtp", 3025), ("submission", 3587), ("submissions", 3465), ("imap", 3143),
                            ("imaps", 3993), ("pop3", 3110), ("pop3s", 3995)))
        with open(self.config, "w") as f:
            f.write(f'hostname = "{name}.bigbox.test"\ndata_dir = "{self.data}"\nallow_plaintext_auth = true\n\n'
                    f'[listen]\n{listen}\n\n[directory]\ndomains = ["example.test"]\n'
                    f'users = [{{ address = "{USER}", password = "{password_hash}" }}]\n')
        self.log = open(os.path.join(run, f"{name}.log"), "ab")

    def imap(self):
        return (self.ip, 3143)

    def cold(self):
        """A fresh process over a deleted index and message cache."""
        self.stop()
        shutil.rmtree(os.path.join(self.data, "store", "index"), ignore_errors=True)
        self.proc = subprocess.Popen([self.binary, "node", "-c", self.config], stdout=self.log, stderr=self.log)
        wait_port(*self.imap())

    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Dovecot:
    """The company harness's Dovecot on its own BASE and ports, over hard links of the files."""

    name = "dovecot"

    def __init__(self, names, pool):
        env = dict(os.environ, BASE=DC_BASE, NUSERS="2", SMTP_PORT="10425", IMAP_PORT=str(DC_PORT),
                   POP3_PORT="10410", WIPE="1")
        subprocess.run([os.path.join(HARNESS, "setup_postfix_dovecot.sh")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        self.maildir = os.path.join(DC_BASE, "mail", "example.test", "u1", "Maildir")
        for d in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.maildir, d), exist_ok=True)
        for f in names:
            os.link(os.path.join(pool, f), os.path.join(self.maildir, "cur", f))
        subprocess.run(["chown", "-R", "vmail:vmail", os.path.join(DC_BASE, "mail")], check=True)
        wait_port("127.0.0.1", DC_PORT)

    def imap(self):
        return ("127.0.0.1", DC_PORT)

    def cold(self):
        for f in os.listdir(self.maildir):
            if f.startswith("dovecot.index"):
                os.unlink(os.path.join(self.maildir, f))

    def stop(self):
        subprocess.run([os.path.join(HARNESS, "stop_postfix_dovecot.sh")], env=dict(os.environ, BASE=DC_BASE),
                       stdout=subprocess.DEVNULL)


def count(response, word):
    """How many untagged responses of kind `word` (FETCH) or numbers in `* SEARCH` lines."""
    if word == "SEARCH":
        return sum(len(line.split()) - 2 for line in response.split(b"\r\n") if line.startswith(b"* SEARCH"))
    return response.count(b" " + word.encode() + b" (")


def session(target, steps):
    """Logs in, runs `steps` ((label, command, kind-to-count)); returns {label: (s, count)}."""
    c = Client(*target.imap())
    out = {}
    start = time.perf_counter()
    c.cmd(f"LOGIN {USER} {PASSWORD}")
    t, _ = c.cmd("SELECT INBOX")
    out["login+select"] = (time.perf_counter() - start, None)
    for label, command, kind in steps:
        t, resp = c.cmd(command)
        out[label] = (t, count(resp, kind) if kind else None)
    c.close()
    return out


SEARCHES = [
    (f"SEARCH SUBJECT {SUBJECT_NEEDLE}", f"SEARCH SUBJECT {SUBJECT_NEEDLE}", "SEARCH"),
    (f"UID SEARCH HEADER X-Tag {TAG}", f"UID SEARCH HEADER X-Tag {TAG}", "SEARCH"),
]
FIRST = [("FETCH 1:* (ENVELOPE), first", "FETCH 1:* (ENVELOPE)", "FETCH")] + SEARCHES + [
    ("re-SELECT", "SELECT INBOX", None),
    ("FETCH 1:* (UID FLAGS)", "FETCH 1:* (UID FLAGS)", "FETCH"),
]
COLD = [("UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE), cold", "UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)",
         "FETCH"),
        ("FETCH 1:* (ENVELOPE), warm", "FETCH 1:* (ENVELOPE)", "FETCH")] + [
    (label + ", warm", command, kind) for label, command, kind in SEARCHES]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sirms", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", ROOT + "/target"),
                                                   "release", "sirms"))
    ap.add_argument("--run", default="/tmp/sirms-bigbox")
    ap.add_argument("--no-dovecot", action="store_true")
    args = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    pool = os.path.join(args.run + "-pool", str(args.n))
    names = generate(pool, args.n)
    shutil.rmtree(args.run, ignore_errors=True)
    os.makedirs(args.run)
    password_hash = subprocess.run([args.sirms, "hash-password"], input=PASSWORD + "\n", capture_output=True,
                                   text=True, check=True).stdout.strip()
    targets = [Sirms("sirms", args.sirms, "127.0.43.1", args.run, names, pool, password_hash)]
    if os.environ.get("BASELINE_SIRMS"):
        targets.append(Sirms("sirms-baseline", os.environ["BASELINE_SIRMS"], "127.0.43.2", args.run, names, pool,
                             password_hash))
    if not args.no_dovecot:
        targets.append(Dovecot(names, pool))
    results = {t.name: {} for t in targets}
    loads = []
    try:
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                loads.append(os.getloadavg()[0])
                for steps, prefix in ((FIRST, ""), (COLD, "[2] ")):
                    t.cold()
                    for label, value in session(t, steps).items():
                        results[t.name].setdefault(prefix + label, []).append(value)
                print(f"round {r + 1}/{args.rounds}: {t.name} done (load {loads[-1]:.2f})", file=sys.stderr)
    finally:
        for t in targets:
            t.stop()
    labels = list(results[targets[0].name])
    head = "| measure | " + " | ".join(t.name for t in targets) + " |"
    lines = [head, "|" + "---|" * (len(targets) + 1)]
    for label in labels:
        cells = []
        for t in targets:
            runs = results[t.name].get(label, [])
            secs = [s for s, _ in runs]
            counts = {c for _, c in runs if c is not None}
            cell = f"{statistics.median(secs) * 1000:.1f} ms ({min(secs) * 1000:.0f}–{max(secs) * 1000:.0f})"
            if counts:
                cell += " [" + ",".join(str(c) for c in sorted(counts)) + "]"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    meta = (f"N={args.n} messages, {args.rounds} rounds (median, min–max; [n] = responses or hits), "
            f"machine: {os.cpu_count()} CPUs, load {min(loads):.2f}–{max(loads):.2f} (1-min avg at each target's "
            f"turn), sirms {args.sirms} from {commit}"
            + (f", baseline {os.environ['BASELINE_SIRMS']}" if os.environ.get("BASELINE_SIRMS") else ""))
    table = meta + "\n\n" + "\n".join(lines) + "\n"
    print(table)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    base = os.path.join(HERE, "results", f"bigbox-{stamp}")
    with open(base + ".md", "w") as f:
        f.write(table)
    with open(base + ".json", "w") as f:
        json.dump({"n": args.n, "rounds": args.rounds, "loads": loads, "commit": commit, "results": results}, f,
                  indent=1)


if __name__ == "__main__":
    main()
