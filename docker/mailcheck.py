#!/usr/bin/env python3
"""Mail checks for docker/test.sh and docker/test-ha.sh, against the router at
$MAILCHECK_HOST (default 127.0.0.1, its published ports). The tests also run it inside
client containers' network namespaces against the routers' addresses on the compose network.

$MAILCHECK_HOST may list several routers, comma-separated: a connection goes to the first
that accepts within $MAILCHECK_CONNECT_TIMEOUT seconds (default 1 with several hosts, else
the whole session timeout), as a sender tries the next of two MX hosts. $MAILCHECK_SOURCE
binds the client's source address (the container must have it).

  mailcheck.py greet PORT                      -> prints the node named in the SMTP greeting
  mailcheck.py send PORT TO TOKEN [--starttls|--tls] [--auth USER:PASS]
  mailcheck.py pop3 PORT USER:PASS TOKEN [--stls|--tls] [--received-from IP] [--received-by NODE]
  mailcheck.py imap PORT USER:PASS TOKEN [--starttls|--tls] [--received-from IP] [--received-by NODE] [--mailbox NAME]
  mailcheck.py sieve PORT USER:PASS SCRIPT      (uploads and activates a Sieve script over ManageSieve)
                                               -> finds the message with TOKEN, checks its bytes
                                                  and the node's Received: header

For docker/test-ha.sh (sessions through $MAILCHECK_HOST; SRCS is a comma-separated list of
source addresses the client container has):

  mailcheck.py greetmany PORT TIMEOUT SRC...   -> one line `ROUTER SRC NODE` for each router
                                                  in $MAILCHECK_HOST (each asked separately)
                                                  and source (NODE `-` if no greeting in TIMEOUT s)
  mailcheck.py watchmove NODE PORT LIMIT SRC...
                                               -> greets from every SRC through each router in
                                                  turn, a round every 0.25 s, until the last 8
                                                  rounds saw no greeting from NODE and none
                                                  missing; prints `served_elsewhere_at=EPOCH`
                                                  (start of the first of those rounds)
  mailcheck.py load SECONDS STOPFILE LOG USER:PASS SRCS [--name N] [--timeout S] [--pause S]
                                               -> client load until STOPFILE exists (at most
                                                  SECONDS): an SMTP delivery to USER and an IMAP
                                                  session (STARTTLS, LOGIN, SELECT) as USER, from
                                                  each source in turn; one JSON line per session
                                                  in LOG (times, source, router, node, ok, error,
                                                  the token of mail acknowledged with 250)
  mailcheck.py loadstats SINCE UNTIL LOG...    -> the load's sessions that started in the window:
                                                  counts, failures, each source's nodes and
                                                  routers, first success per client and router
                                                  and per source and node
  mailcheck.py verify USER:PASS LOG...         -> every token the logs show acknowledged for
                                                  USER is in USER's INBOX (read over IMAP)

For docker/test-ha.sh's replicated mailboxes (USERS: comma-separated addresses sharing the
password PASS; every message carries a unique token, its Message-ID):

  mailcheck.py rload SECONDS STOPFILE LOG USERS SRCS [--threads N] [--timeout S] [--pause S] [--name N]
                                               -> SMTP deliveries to USERS in turn, one message
                                                  a session, from N threads; one JSON line per
                                                  session in LOG (token, recipient, router,
                                                  node, reply code, acked: 250 after DATA)
  mailcheck.py rflags SECONDS STOPFILE LOG USERS PASS SRCS [--keyword K] [--timeout S] [--pause S]
                                               -> IMAP sessions as USERS in turn: SELECT INBOX,
                                                  UID STORE +FLAGS (\\Seen K) on up to 3 messages
                                                  without K; one JSON line per STORE in LOG
                                                  (user, UIDs, tokens, ok: answered OK)
  mailcheck.py rsnap PASS USER...              -> one JSON line per user: the node that served,
                                                  UIDVALIDITY, and UID, token, flags (without
                                                  \\Recent) and SHA-256 of every message in INBOX
  mailcheck.py firstread PASS USER LIMIT       -> LOGIN, SELECT, FETCH as USER until one works
                                                  (at most LIMIT s): `read_at=EPOCH node=N`
  mailcheck.py rverify BEFORE AFTER LOG...     -> two rsnap outputs (before and after a fault)
                                                  against the rload/rflags logs: acknowledged,
                                                  lost, duplicated, UIDVALIDITY and UIDs kept,
                                                  flag changes answered OK present (`key=value`;
                                                  exit 1 if any is off)
  mailcheck.py maildirs ROOT_A ROOT_B USER...  -> the users' Maildirs under two nodes' data
                                                  directories (read from the host), folder by
                                                  folder: UIDVALIDITY, and per UID the SHA-256
                                                  of the file, its flags (keyword letters by
                                                  name) and mtime (the internal date)

For the cluster plane (mutual TLS):

  mailcheck.py grpctls HOST:PORT CA [CERT KEY] -> a TLS connection checked against CA, with the
                                                  client certificate CERT/KEY if given, that
                                                  opens HTTP/2 (gRPC's transport); prints `h2`
                                                  when the server answered with its SETTINGS,
                                                  else `refused: WHY`; exits 0 either way

greet, send, pop3 and imap print `node=NAME` (the node that greeted) on success and exit 0;
on failure it prints why and exits 1 (3 for IMAP when nothing answers IMAP at all).
Certificates are self-signed: not verified.
"""

import concurrent.futures
import imaplib
import json
import os
import poplib
import random
import re
import smtplib
import socket
import ssl
import sys
import time

HOST = os.environ.get("MAILCHECK_HOST") or "127.0.0.1"
HOSTS = [h.strip() for h in HOST.split(",") if h.strip()]
TIMEOUT = 20
CONNECT_TIMEOUT = float(os.environ.get("MAILCHECK_CONNECT_TIMEOUT") or (1 if len(HOSTS) > 1 else TIMEOUT))
SOURCE = os.environ.get("MAILCHECK_SOURCE") or None


def connect(port, timeout=TIMEOUT, source=None, hosts=None):
    """A TCP connection to the first of HOSTS (or HOSTS) that accepts one within
    CONNECT_TIMEOUT, from SOURCE (or SOURCE); returns the socket (session timeout set) and
    the host it reached."""
    source = source or SOURCE
    errors = []
    for host in hosts or HOSTS:
        try:
            sock = socket.create_connection((host, int(port)), min(CONNECT_TIMEOUT, timeout), (source, 0) if source else None)
        except OSError as e:
            errors.append(f"{host}:{port}: {e}")
            continue
        sock.settimeout(timeout)
        return sock, host
    raise ConnectionError("; ".join(errors))


# The mail libraries over connect(). `peer` is the router the session reached.
class SMTP(smtplib.SMTP):
    peer = None

    def _get_socket(self, host, port, timeout):
        sock, self.peer = connect(port, timeout)
        return sock


class SMTP_SSL(smtplib.SMTP_SSL, SMTP):  # smtplib.SMTP_SSL wraps what SMTP._get_socket gives
    pass


class IMAP4(imaplib.IMAP4):
    peer = None

    def _create_socket(self, timeout):
        sock, self.peer = connect(self.port, timeout or TIMEOUT)
        return sock


class IMAP4_SSL(imaplib.IMAP4_SSL):
    peer = None

    def _create_socket(self, timeout):
        sock, self.peer = connect(self.port, timeout or TIMEOUT)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class POP3(poplib.POP3):
    peer = None

    def _create_socket(self, timeout):
        sock, self.peer = connect(self.port, timeout or TIMEOUT)
        return sock


class POP3_SSL(poplib.POP3_SSL):
    peer = None

    def _create_socket(self, timeout):
        sock, self.peer = connect(self.port, timeout or TIMEOUT)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def node_of(greeting):
    text = greeting.decode("utf-8", "replace") if isinstance(greeting, bytes) else greeting
    m = re.search(r"\b(node\d+)\b", text)
    if not m:
        raise AssertionError(f"greeting names no node: {text!r}")
    return m.group(1)


def message(token, sender, to):
    """The message sent for TOKEN, CRLF line endings, no trailing CRLF."""
    lines = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: sirms docker test {token}",
        f"Message-ID: <{token}@docker.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"token {token}",
        "..a line that starts with a dot",
        "a line with trailing spaces   ",
        "ünïcödé and a long line " + "x" * 900,
        "last line",
    ]
    return "\r\n".join(lines).encode("utf-8")


def smtp_connect(port, mode):
    if mode == "--tls":
        s = SMTP_SSL(timeout=TIMEOUT, context=tls_context())
    else:
        s = SMTP(timeout=TIMEOUT)
    s._host = HOSTS[0]  # connect() does not set it; starttls() and SMTP_SSL need it for SNI
    code, greeting = s.connect(HOSTS[0], port)
    if code != 220:
        raise AssertionError(f"SMTP greeting {code} {greeting!r}")
    return s, node_of(greeting)


def cmd_greet(port):
    s, node = smtp_connect(int(port), None)
    s.quit()
    return node


def cmd_send(port, to, token, *opts):
    opts = list(opts)
    mode = "--tls" if "--tls" in opts else ("--starttls" if "--starttls" in opts else None)
    auth = opts[opts.index("--auth") + 1] if "--auth" in opts else None
    sender = auth.split(":", 1)[0] if auth else "tester@sender.test"
    s, node = smtp_connect(int(port), mode)
    s.ehlo("client.test")
    if mode == "--starttls":
        s.starttls(context=tls_context())
        s.ehlo("client.test")
    if auth:
        user, password = auth.split(":", 1)
        s.login(user, password)
    refused = s.sendmail(sender, [to], message(token, sender, to))
    if refused:
        raise AssertionError(f"recipients refused: {refused}")
    s.quit()
    return node


def check_bytes(found, token, end=b""):
    """FOUND (the message as read back) must end with the body we sent, byte for byte.

    smtplib ends the message with CRLF before the final dot, and that CRLF is part of the
    message: IMAP returns it (END=CRLF); poplib's lines drop it (END empty).
    """
    want = message(token, None, None)
    body = want[want.index(b"\r\n\r\n") + 4:] + end
    if not found.endswith(body):
        raise AssertionError(f"body differs: {found[-200:]!r} vs {body[-200:]!r}")
    if f"Message-ID: <{token}@docker.test>".encode() not in found:
        raise AssertionError("Message-ID header lost")


def option(opts, name):
    return opts[opts.index(name) + 1] if name in opts else None


def check_received(found, opts):
    """The topmost Received: header (the accepting node's) names the client's address
    (--received-from; the router passes it on in a PROXY v2 header) and the node
    (--received-by)."""
    want_ip, want_by = option(opts, "--received-from"), option(opts, "--received-by")
    if want_ip is None and want_by is None:
        return
    m = re.search(rb"^Received: from [^\r\n]*\(\[([^\]]*)\]\)\s+by\s+(\S+)", found, re.M)
    if not m:
        raise AssertionError("no Received: header from a SIRMS node")
    ip, by = m.group(1).decode(), m.group(2).decode()
    if want_ip is not None and ip != want_ip:
        raise AssertionError(f"Received: from [{ip}], expected [{want_ip}]")
    if want_by is not None and by.split(".")[0] != want_by:
        raise AssertionError(f"Received: by {by}, expected {want_by}")


class NoImap(Exception):
    """Nothing answers IMAP on the port (the nodes do not serve it)."""


def cmd_imap(port, login, token, *opts):
    user, password = login.split(":", 1)
    try:
        if "--tls" in opts:
            m = IMAP4_SSL(HOSTS[0], int(port), ssl_context=tls_context(), timeout=TIMEOUT)
        else:
            m = IMAP4(HOSTS[0], int(port), timeout=TIMEOUT)
    except (imaplib.IMAP4.abort, ConnectionError, ssl.SSLError) as e:
        raise NoImap(f"no IMAP greeting on {port}: {e}")
    node = node_of(m.welcome)
    if "--starttls" in opts:
        m.starttls(ssl_context=tls_context())
    m.login(user, password)
    mailbox = option(list(opts), "--mailbox") or "INBOX"
    typ, data = m.select(mailbox, readonly=True)
    if typ != "OK":
        raise AssertionError(f"SELECT {mailbox}: {typ} {data}")
    found = None
    for i in range(int(data[0]), 0, -1):
        typ, parts = m.fetch(str(i), "(BODY.PEEK[])")
        raw = b"".join(p[1] for p in parts if isinstance(p, tuple))
        if token.encode() in raw:
            found = raw
            break
    m.logout()
    if found is None:
        raise AssertionError(f"no message with token {token} in {mailbox}")
    check_bytes(found, token, b"\r\n")
    check_received(found, opts)
    return node


def cmd_sieve(port, login, script):
    """Uploads SCRIPT as LOGIN's active Sieve script over ManageSieve (STARTTLS, PLAIN)."""
    import managesieve
    user, password = login.split(":", 1)
    m = managesieve.MANAGESIEVE(HOSTS[0], int(port), use_tls=True, tls_verify=False, timeout=TIMEOUT)
    if m.login("", user, password) != "OK":
        raise AssertionError(f"ManageSieve login: {m.response_text}")
    for step, status in (("PUTSCRIPT", m.putscript("docker", script)), ("SETACTIVE", m.setactive("docker"))):
        if status != "OK":
            raise AssertionError(f"ManageSieve {step}: {m.response_text}")
    m.logout()
    return "any"  # the script is the user's wherever it was stored: no node to name


def cmd_pop3(port, login, token, *opts):
    user, password = login.split(":", 1)
    if "--tls" in opts:
        p = POP3_SSL(HOSTS[0], int(port), timeout=TIMEOUT, context=tls_context())
    else:
        p = POP3(HOSTS[0], int(port), timeout=TIMEOUT)
    node = node_of(p.getwelcome())
    if "--stls" in opts:
        p.stls(context=tls_context())
    p.user(user)
    p.pass_(password)
    count, _ = p.stat()
    found = None
    for i in range(count, 0, -1):
        _, lines, _ = p.retr(i)
        raw = b"\r\n".join(lines)
        if token.encode() in raw:
            found = raw
            break
    p.quit()
    if found is None:
        raise AssertionError(f"no message with token {token} among {count}")
    check_bytes(found, token)  # poplib has already undone the dot-stuffing
    check_received(found, opts)
    return node


# --- docker/test-ha.sh: many sources, moves, load ---------------------------------------


def greet_from(src, host, port, timeout):
    """The node named in the SMTP greeting that source SRC gets through HOST within TIMEOUT
    seconds, else "-"."""
    deadline = time.monotonic() + timeout
    try:
        sock, _ = connect(port, timeout, source=src, hosts=[host])
    except OSError:
        return "-"
    with sock:
        buf = b""
        try:
            while b"\r\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "-"
                sock.settimeout(left)
                chunk = sock.recv(1024)
                if not chunk:
                    return "-"
                buf += chunk
            line = buf.split(b"\r\n", 1)[0]
            if not line.startswith(b"220"):
                return "-"
            node = node_of(line)
        except (OSError, AssertionError):
            return "-"
        try:  # end the session cleanly; its answer does not matter
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            sock.sendall(b"QUIT\r\n")
            sock.recv(1024)
        except OSError:
            pass
        return node


def cmd_greetmany(port, timeout, *srcs):
    jobs = [(host, src) for host in HOSTS for src in srcs]
    with concurrent.futures.ThreadPoolExecutor(min(64, max(1, len(jobs)))) as pool:
        nodes = list(pool.map(lambda j: greet_from(j[1], j[0], int(port), float(timeout)), jobs))
    for (host, src), node in zip(jobs, nodes):
        print(host, src, node)
    return 0


def cmd_watchmove(node, port, limit, *srcs):
    """A round every 0.25 s greets from every source through one router (the routers in
    turn), with 1.5 s to answer; once STABLE rounds in a row (by start time) had every source
    greeted by a node other than NODE, prints when the first of them started."""
    stable, every, answer = 8, 0.25, 1.5
    deadline = time.time() + float(limit)
    pool = concurrent.futures.ThreadPoolExecutor(256)
    rounds, finished, streak, streak_start, last = [], 0, 0, None, None
    next_round = time.time()
    try:
        while time.time() < deadline:
            now = time.time()
            if now >= next_round:
                host = HOSTS[len(rounds) % len(HOSTS)]
                rounds.append((now, host, [pool.submit(greet_from, s, host, int(port), answer) for s in srcs]))
                next_round += every
            while finished < len(rounds) and all(f.done() for f in rounds[finished][2]):
                start, host, futures = rounds[finished]
                finished += 1
                got = [f.result() for f in futures]
                last = (host, got)
                if all(g not in ("-", node) for g in got):
                    streak_start = start if streak == 0 else streak_start
                    streak += 1
                else:
                    streak = 0
                if streak >= stable:
                    print(f"served_elsewhere_at={streak_start:.3f} rounds={finished}")
                    return 0
            time.sleep(0.02)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if last:
        host, got = last
        seen = ", ".join(f"{g}: {got.count(g)}" for g in sorted(set(got)))
        print(f"error: after {limit} s the last round through {host} still got {seen}")
    else:
        print(f"error: no round finished in {limit} s")
    return 1


def cmd_load(seconds, stopfile, log, login, srcs, *opts):
    """Light client load from each source in turn: an SMTP delivery to USER, then an IMAP
    session as USER; one JSON line per session in LOG."""
    global SOURCE
    user, password = login.split(":", 1)
    srcs = srcs.split(",")
    timeout = float(option(opts, "--timeout") or 5)
    pause = float(option(opts, "--pause") or 0.2)
    name = option(opts, "--name") or "load"
    sender = f"{name}@sender.test"
    deadline = time.time() + float(seconds)
    n = 0
    with open(log, "a", buffering=1) as out:
        while time.time() < deadline and not os.path.exists(stopfile):
            SOURCE = srcs[n % len(srcs)]
            for proto in ("smtp", "imap"):
                rec = {"client": name, "src": SOURCE, "proto": proto, "to": user, "t0": time.time()}
                session = None
                try:
                    if proto == "smtp":
                        rec["token"] = f"{name}-{n}-{random.randrange(1 << 32):08x}"
                        session = SMTP(timeout=timeout)
                        code, greeting = session.connect(HOSTS[0], 25)
                        rec["router"] = session.peer
                        if code != 220:
                            raise AssertionError(f"SMTP greeting {code} {greeting!r}")
                        rec["node"] = node_of(greeting)
                        session.ehlo("load.test")
                        refused = session.sendmail(sender, [user], message(rec["token"], sender, user))
                        if refused:
                            raise AssertionError(f"recipients refused: {refused}")
                        rec["acked"] = True  # 250 after DATA: the server has the message
                        try:
                            session.quit()
                        except (OSError, smtplib.SMTPException):
                            pass
                    else:
                        session = IMAP4(HOSTS[0], 143, timeout=timeout)
                        rec["router"] = session.peer
                        rec["node"] = node_of(session.welcome)
                        session.starttls(ssl_context=tls_context())
                        session.login(user, password)
                        typ, data = session.select("INBOX", readonly=True)
                        if typ != "OK":
                            raise AssertionError(f"SELECT INBOX: {typ} {data}")
                        rec["exists"] = int(data[0])
                        session.logout()
                    rec["ok"] = True
                except Exception as e:  # whatever went wrong is what this client saw
                    rec["ok"] = False
                    rec["error"] = f"{type(e).__name__}: {e}"[:300]
                    sock = getattr(session, "sock", None)
                    if sock is not None:
                        sock.close()
                rec["t1"] = time.time()
                out.write(json.dumps(rec) + "\n")
                time.sleep(pause)
            n += 1
    return 0


def read_logs(logs):
    for log in logs:
        with open(log) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:  # a line still being written
                    continue


def cmd_loadstats(since, until, *logs):
    """Sessions that started in [SINCE, UNTIL): counts, failures, the nodes and routers
    each source saw, and when each (client, router) and (source, node) first succeeded."""
    since, until = float(since), float(until)
    recs = [r for r in read_logs(logs) if since <= r["t0"] < until]
    ok = [r for r in recs if r.get("ok")]
    failed = [r for r in recs if not r.get("ok")]
    print(f"window {len(recs)} sessions, {len(ok)} ok, {len(failed)} failed, "
          f"{sum(1 for r in ok if r.get('acked'))} acknowledged deliveries")
    for r in failed[:40]:
        print(f"failed {r['client']} {r['src']} {r['proto']} {r.get('router', '-')} "
              f"+{r['t0'] - since:.2f}s {r.get('error', '')}")
    per_src = {}
    for r in ok:
        nodes, routers = per_src.setdefault(r["src"], (set(), set()))
        nodes.add(r["node"])
        routers.add(r["router"])
    for src in sorted(per_src):
        nodes, routers = per_src[src]
        print(f"source {src} {','.join(sorted(nodes))} {','.join(sorted(routers))}")
    first = {}
    for r in ok:
        for key in (("first_ok_via", r["client"], r["router"]), ("first_ok_on", r["src"], r["node"])):
            first[key] = min(first.get(key, r["t1"]), r["t1"])
    for key in sorted(first):
        print(*key, f"{first[key]:.3f}")
    return 0


def cmd_verify(login, *logs):
    """Every token the load logs show acknowledged for USER is in USER's INBOX."""
    user, password = login.split(":", 1)
    acked = {r["token"] for r in read_logs(logs) if r.get("acked") and r.get("to") == user}
    m = IMAP4(HOSTS[0], 143, timeout=TIMEOUT)
    node = node_of(m.welcome)
    m.starttls(ssl_context=tls_context())
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    if typ != "OK":
        raise AssertionError(f"SELECT INBOX: {typ} {data}")
    count, found = int(data[0]), set()
    if count:
        typ, parts = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for part in parts:
            if isinstance(part, tuple):
                found.update(t.decode() for t in re.findall(rb"sirms docker test (\S+)", part[1]))
    m.logout()
    missing = sorted(acked - found)
    print(f"acknowledged {len(acked)}, in the mailbox {len(acked) - len(missing)}, missing {len(missing)}"
          f" (INBOX has {count}; read via {node})" + (f"; e.g. {missing[:5]}" if missing else ""))
    return 1 if missing else 0


def cmd_grpctls(addr, ca, cert=None, key=None):
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                # The HTTP/2 preface and an empty SETTINGS frame; a server that took the client
                # answers with a SETTINGS frame (type 4) of its own.
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                head = s.recv(9)
                print("h2" if len(head) == 9 and head[3] == 4 else f"refused: answer {head!r}")
    except (OSError, ssl.SSLError) as e:
        print(f"refused: {type(e).__name__}: {e}")
    return 0


# --- docker/test-ha.sh: replicated mailboxes --------------------------------------------


class SMTPFrom(smtplib.SMTP):
    """An SMTP client from source address SRC to the first of HOSTS that answers."""

    def __init__(self, src, hosts, timeout):
        self.src, self.hosts, self.peer = src, hosts, None
        super().__init__(timeout=timeout)

    def _get_socket(self, host, port, timeout):
        sock, self.peer = connect(port, timeout, source=self.src, hosts=self.hosts)
        return sock


class IMAPFrom(imaplib.IMAP4):
    """An IMAP client from source address SRC to the first of HOSTS that answers."""

    def __init__(self, src, hosts, timeout):
        self.src, self.hosts, self.peer = src, hosts, None
        super().__init__(hosts[0], 143, timeout=timeout)

    def _create_socket(self, timeout):
        sock, self.peer = connect(self.port, timeout or TIMEOUT, source=self.src, hosts=self.hosts)
        return sock


def imap_as(user, password, src=None, timeout=TIMEOUT, readonly=True):
    """A logged-in session (STARTTLS) with INBOX selected; returns it, the node that greeted
    and the mailbox's UIDVALIDITY."""
    m = IMAPFrom(src or SOURCE, HOSTS, timeout)
    try:
        node = node_of(m.welcome)
        m.starttls(ssl_context=tls_context())
        m.login(user, password)
        typ, data = m.select("INBOX", readonly=readonly)
        if typ != "OK":
            raise AssertionError(f"SELECT INBOX: {typ} {data}")
        m.exists = int(data[0])
        return m, node, int(m.response("UIDVALIDITY")[1][0])
    except Exception:
        if m.sock is not None:
            m.sock.close()
        raise


def seq_of(text):
    return int(text.split(b" ", 1)[0])


def listing(m, body):
    """Every message of the selected mailbox by sequence number: UID and flags (without
    \\Recent), and with BODY the part fetched (BODY.PEEK[...]; by sequence number, which no
    other session changes: nobody expunges). Unsolicited FETCHes (flag changes of other
    sessions) carry no UID or literal and are skipped."""
    out = {}
    if not m.exists:
        return []
    typ, data = m.fetch("1:*", "(UID FLAGS)")
    if typ != "OK":
        raise AssertionError(f"FETCH: {typ} {data}")
    for item in data:
        text = item[0] if isinstance(item, tuple) else item
        if not text:
            continue
        uid = re.search(rb"UID (\d+)", text)
        flags = re.search(rb"FLAGS \(([^)]*)\)", text)
        if uid and flags:
            names = sorted(f for f in flags.group(1).decode().split() if f != "\\Recent")
            out[seq_of(text)] = {"uid": int(uid.group(1)), "flags": names}
    if body and out:
        typ, data = m.fetch("1:*", f"({body})")
        if typ != "OK":
            raise AssertionError(f"FETCH {body}: {typ} {data}")
        for item in data:
            if isinstance(item, tuple) and seq_of(item[0]) in out:
                out[seq_of(item[0])]["body"] = item[1]
    return [out[k] for k in sorted(out)]


def token_of(raw):
    m = re.search(rb"^Message-ID: <([^>@]+)@docker\.test>", raw or b"", re.M | re.I)
    return m.group(1).decode() if m else None


class Log:
    """One JSON line per record, from several threads."""

    def __init__(self, path):
        import threading
        self.out, self.lock = open(path, "a", buffering=1), threading.Lock()

    def write(self, rec):
        with self.lock:
            self.out.write(json.dumps(rec) + "\n")


def cmd_rload(seconds, stopfile, log, users, srcs, *opts):
    """SMTP deliveries to USERS in turn, one message a session, from --threads threads; what
    each client saw, in LOG."""
    import threading
    users, srcs = users.split(","), srcs.split(",")
    threads = int(option(opts, "--threads") or 4)
    timeout = float(option(opts, "--timeout") or 30)
    pause = float(option(opts, "--pause") or 0.05)
    name = option(opts, "--name") or "rload"
    sender = f"{name}@sender.test"
    deadline = time.time() + float(seconds)
    out = Log(log)

    def run(t):
        n = 0
        while time.time() < deadline and not os.path.exists(stopfile):
            i = t + n * threads
            to, src = users[i % len(users)], srcs[i % len(srcs)]
            rec = {"client": name, "src": src, "proto": "smtp", "to": to, "t0": time.time(),
                   "token": f"{name}-{t}-{n}-{random.randrange(1 << 32):08x}", "acked": False}
            s = SMTPFrom(src, HOSTS, timeout)
            try:
                code, greeting = s.connect(HOSTS[0], 25)
                rec["router"] = s.peer
                if code != 220:
                    raise AssertionError(f"SMTP greeting {code} {greeting!r}")
                rec["node"] = node_of(greeting)
                s.ehlo("rload.test")
                for step, command in (("MAIL", lambda: s.mail(sender)), ("RCPT", lambda: s.rcpt(to))):
                    code, reply = command()
                    if code not in (250, 251):
                        rec["code"] = code
                        raise AssertionError(f"{step}: {code} {reply!r}")
                code, reply = s.data(message(rec["token"], sender, to))
                rec["code"] = code
                rec["acked"] = code == 250
                if not rec["acked"]:
                    rec["error"] = f"DATA: {code} {reply.decode(errors='replace')}"[:300]
                try:
                    s.quit()
                except (OSError, smtplib.SMTPException):
                    pass
            except Exception as e:  # whatever went wrong is what this client saw
                rec.setdefault("code", getattr(e, "smtp_code", None))
                rec["error"] = f"{type(e).__name__}: {e}"[:300]
                if s.sock is not None:
                    s.sock.close()
            rec["t1"] = time.time()
            rec["ok"] = rec["acked"]
            out.write(rec)
            n += 1
            time.sleep(pause)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return 0


def cmd_rflags(seconds, stopfile, log, users, password, srcs, *opts):
    """IMAP sessions as USERS in turn, each adding \\Seen and a keyword to up to 3 messages
    that lack the keyword; one JSON line per STORE in LOG."""
    users, srcs = users.split(","), srcs.split(",")
    keyword = option(opts, "--keyword") or "$Replicated"
    timeout = float(option(opts, "--timeout") or 30)
    pause = float(option(opts, "--pause") or 0.1)
    deadline = time.time() + float(seconds)
    out = Log(log)
    n = 0
    while time.time() < deadline and not os.path.exists(stopfile):
        user, src = users[n % len(users)], srcs[n % len(srcs)]
        n += 1
        rec = {"client": "rflags", "src": src, "proto": "imap", "user": user, "t0": time.time(), "ok": False}
        m = None
        try:
            m, rec["node"], rec["uidvalidity"] = imap_as(user, password, src, timeout, readonly=False)
            rec["router"] = m.peer
            msgs = [x for x in listing(m, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]") if keyword not in x["flags"]]
            picked = random.sample(msgs, min(3, len(msgs)))
            if picked:
                rec["uids"] = [x["uid"] for x in picked]
                rec["tokens"] = [token_of(x.get("body")) for x in picked]
                rec["flags"] = ["\\Seen", keyword]
                uids = ",".join(str(u) for u in rec["uids"])
                typ, data = m.uid("STORE", uids, "+FLAGS", f"(\\Seen {keyword})")
                rec["ok"] = typ == "OK"
                if not rec["ok"]:
                    rec["error"] = f"STORE: {typ} {data}"[:300]
            m.logout()
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
            if m is not None and m.sock is not None:
                m.sock.close()
        rec["t1"] = time.time()
        if "uids" in rec or "error" in rec:
            out.write(rec)
        time.sleep(pause)
    return 0


def cmd_rsnap(password, *users):
    """Each user's INBOX: UIDVALIDITY, and UID, token, flags and SHA-256 of every message."""
    import hashlib
    for user in users:
        m, node, uidvalidity = imap_as(user, password)
        msgs = [{"uid": x["uid"], "token": token_of(x.get("body")), "flags": x["flags"],
                 "sha": hashlib.sha256(x.get("body") or b"").hexdigest()}
                for x in listing(m, "BODY.PEEK[]")]
        m.logout()
        print(json.dumps({"user": user, "node": node, "uidvalidity": uidvalidity, "msgs": msgs}))
    return 0


def cmd_firstread(password, user, limit):
    """LOGIN, SELECT and FETCH as USER, again and again, until one works."""
    deadline = time.time() + float(limit)
    last = None
    while time.time() < deadline:
        m = None
        try:
            m, node, _ = imap_as(user, password, timeout=3)
            listing(m, None)
            m.logout()
            print(f"read_at={time.time():.3f} node={node}")
            return 0
        except Exception as e:
            last = f"{type(e).__name__}: {e}"
            if m is not None and m.sock is not None:
                m.sock.close()
        time.sleep(0.1)
    print(f"error: no IMAP read as {user} in {limit} s; last: {last}")
    return 1


def load_snap(path):
    with open(path) as f:
        return {s["user"]: s for s in map(json.loads, filter(str.strip, f))}


def cmd_rverify(before, after, *logs):
    """The mailboxes AFTER a fault against the clients' logs and the snapshot BEFORE it."""
    before, after = load_snap(before), load_snap(after)
    recs = list(read_logs(logs))
    acked = {(r["to"], r["token"]) for r in recs if r.get("proto") == "smtp" and r.get("acked")}
    sent = {(r["to"], r["token"]) for r in recs if r.get("proto") == "smtp"}
    stores = [r for r in recs if r.get("proto") == "imap" and r.get("ok")]
    f = dict.fromkeys(("acked", "present", "lost", "duplicated", "unacked_present", "unknown",
                       "uidvalidity_changed", "seen_before", "uid_kept", "uid_changed", "uid_reused",
                       "unacked_seen_gone", "flag_stores", "flags_present", "flags_missing",
                       "flags_on_gone"), 0)
    f["acked"] = sum(1 for u, _ in acked if u in after)
    examples = []
    for user, snap in after.items():
        counts = {}
        for msg in snap["msgs"]:
            counts[msg["token"]] = counts.get(msg["token"], 0) + 1
        mine = {t for u, t in acked if u == user}
        f["present"] += sum(1 for t in mine if t in counts)
        lost = sorted(t for t in mine if t not in counts)
        f["lost"] += len(lost)
        examples += [f"lost {user} {t}" for t in lost[:3]]
        dups = [t for t, c in counts.items() if c > 1]
        f["duplicated"] += sum(counts[t] - 1 for t in dups)
        examples += [f"duplicated {user} {t} x{counts[t]}" for t in dups[:3]]
        f["unacked_present"] += sum(1 for t in counts if t not in mine and (user, t) in sent)
        f["unknown"] += sum(1 for t in counts if (user, t) not in sent)
        old = before.get(user)
        if old is None:
            continue
        if old["uidvalidity"] != snap["uidvalidity"]:
            f["uidvalidity_changed"] += 1
            examples.append(f"uidvalidity {user} {old['uidvalidity']} -> {snap['uidvalidity']}")
        uid_now = {m["uid"]: m["token"] for m in snap["msgs"]}
        token_uid = {m["token"]: m["uid"] for m in snap["msgs"]}
        for msg in old["msgs"]:
            if msg["token"] in mine:
                f["seen_before"] += 1
                if token_uid.get(msg["token"]) == msg["uid"]:
                    f["uid_kept"] += 1
                else:
                    f["uid_changed"] += 1
                    examples.append(f"uid {user} {msg['token']} {msg['uid']} -> {token_uid.get(msg['token'])}")
            elif msg["token"] not in token_uid:
                f["unacked_seen_gone"] += 1
            if uid_now.get(msg["uid"], msg["token"]) != msg["token"]:
                f["uid_reused"] += 1
                examples.append(f"uid {msg['uid']} of {user} was {msg['token']}, now {uid_now[msg['uid']]}")
    for r in stores:
        snap = after.get(r["user"])
        if snap is None:
            continue
        flags = {m["token"]: set(m["flags"]) for m in snap["msgs"]}
        for token in r.get("tokens", []):
            f["flag_stores"] += 1
            if token not in flags:
                f["flags_on_gone"] += 1
            elif set(r["flags"]) <= flags[token]:
                f["flags_present"] += 1
            else:
                f["flags_missing"] += 1
                examples.append(f"flags {r['user']} {token}: {sorted(flags[token])} lacks {r['flags']}")
    print(" ".join(f"{k}={v}" for k, v in f.items()))
    for e in examples[:10]:
        print("  " + e)
    off = f["lost"] + f["duplicated"] + f["uidvalidity_changed"] + f["uid_changed"] + f["flags_missing"]
    return 1 if off or f["uid_reused"] else 0


def maildir_of(root, user):
    """USER's Maildir under a node's data directory (the store's `mail/` may sit deeper)."""
    escaped = re.sub(r"[^A-Za-z0-9\-_@+=~!#$&'^`{}|\x80-\U0010ffff]", lambda m: f"%{ord(m.group()):02X}", user)
    for sub in ("store/mail", "mail"):
        path = os.path.join(root, sub, escaped)
        if os.path.isdir(path):
            return path
    return None


def maildir_listing(root, user):
    """Folder -> UIDVALIDITY, and (folder, UID) -> (SHA-256, flags, mtime) of USER's files."""
    import hashlib
    base = maildir_of(root, user)
    out = {}
    if base is None:
        return out
    folders = [("INBOX", base)] + sorted((d, os.path.join(base, d)) for d in os.listdir(base)
                                         if d.startswith(".") and os.path.isdir(os.path.join(base, d, "cur")))
    for name, path in folders:
        settings = open(os.path.join(path, "sirms-folder")).read() if os.path.exists(os.path.join(path, "sirms-folder")) else ""
        validity = re.search(r"^uidvalidity (\d+)", settings, re.M)
        out[name] = ("uidvalidity", validity.group(1) if validity else None)
        kw_path = os.path.join(path, "sirms-keywords")
        keywords = open(kw_path).read().splitlines() if os.path.exists(kw_path) else []
        for sub in ("cur", "new"):
            for file in os.listdir(os.path.join(path, sub)):
                m = re.search(r",U=(\d+),S=(\d+)(?::2,([A-Za-z]*))?$", file)
                if not m:
                    continue
                letters = m.group(3) or ""
                flags = sorted([c for c in letters if c.isupper()] +
                               [keywords[ord(c) - 97] if ord(c) - 97 < len(keywords) else f"?{c}"
                                for c in letters if c.islower()])
                full = os.path.join(path, sub, file)
                with open(full, "rb") as fh:
                    sha = hashlib.sha256(fh.read()).hexdigest()
                out[(name, int(m.group(1)))] = (sha, " ".join(flags), int(os.stat(full).st_mtime))
    return out


def cmd_maildirs(root_a, root_b, *users):
    """Two nodes' copies of USERS, folder by folder and file by file."""
    f = dict.fromkeys(("users", "folders", "messages", "same", "differ", "only_a", "only_b", "missing_a", "missing_b"), 0)
    examples = []
    for user in users:
        f["users"] += 1
        a, b = maildir_listing(root_a, user), maildir_listing(root_b, user)
        f["missing_a"] += not a
        f["missing_b"] += not b
        for key in sorted(set(a) | set(b), key=str):
            if isinstance(key, str):
                f["folders"] += 1
            else:
                f["messages"] += 1
            if key not in b:
                f["only_a"] += 1
                examples.append(f"{user} {key}: only in A {a[key]}")
            elif key not in a:
                f["only_b"] += 1
                examples.append(f"{user} {key}: only in B {b[key]}")
            elif a[key] != b[key]:
                f["differ"] += 1
                examples.append(f"{user} {key}: A {a[key]} B {b[key]}")
            else:
                f["same"] += 1
    print(" ".join(f"{k}={v}" for k, v in f.items()))
    for e in examples[:10]:
        print("  " + e)
    return 1 if f["differ"] or f["only_a"] or f["only_b"] or f["missing_a"] or f["missing_b"] else 0


# Commands that print their own results and return the exit code.
REPORTS = {"greetmany": cmd_greetmany, "watchmove": cmd_watchmove, "load": cmd_load,
           "loadstats": cmd_loadstats, "verify": cmd_verify, "grpctls": cmd_grpctls,
           "rload": cmd_rload, "rflags": cmd_rflags, "rsnap": cmd_rsnap, "firstread": cmd_firstread,
           "rverify": cmd_rverify, "maildirs": cmd_maildirs}


def main(argv):
    commands = {"greet": cmd_greet, "send": cmd_send, "pop3": cmd_pop3, "imap": cmd_imap, "sieve": cmd_sieve}
    if len(argv) < 2 or argv[1] not in commands and argv[1] not in REPORTS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[1] in REPORTS:
            return REPORTS[argv[1]](*argv[2:])
        node = commands[argv[1]](*argv[2:])
    except NoImap as e:
        print(f"skip: {e}")
        return 3
    except (imaplib.IMAP4.error, AssertionError, OSError, smtplib.SMTPException, poplib.error_proto, ssl.SSLError, socket.timeout) as e:
        print(f"error: {type(e).__name__}: {e}")
        return 1
    print(f"node={node}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
