#!/usr/bin/env python3
"""Mail checks for docker/test.sh, against the router at $MAILCHECK_HOST (default
127.0.0.1, its published ports). docker/test.sh also runs it inside client containers'
network namespaces against the router's address on the compose network.

  mailcheck.py greet PORT                      -> prints the node named in the SMTP greeting
  mailcheck.py send PORT TO TOKEN [--starttls|--tls] [--auth USER:PASS]
  mailcheck.py pop3 PORT USER:PASS TOKEN [--stls|--tls] [--received-from IP] [--received-by NODE]
  mailcheck.py imap PORT USER:PASS TOKEN [--starttls|--tls] [--received-from IP] [--received-by NODE]
                                               -> finds the message with TOKEN, checks its bytes
                                                  and the node's Received: header

Every command prints `node=NAME` (the node that greeted) on success and exits 0;
on failure it prints why and exits 1 (3 for IMAP when nothing answers IMAP at all).
Certificates are self-signed: not verified.
"""

import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import sys

HOST = os.environ.get("MAILCHECK_HOST") or "127.0.0.1"
TIMEOUT = 20


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
        s = smtplib.SMTP_SSL(timeout=TIMEOUT, context=tls_context())
    else:
        s = smtplib.SMTP(timeout=TIMEOUT)
    s._host = HOST  # connect() does not set it; starttls() and SMTP_SSL need it for SNI
    code, greeting = s.connect(HOST, port)
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
            m = imaplib.IMAP4_SSL(HOST, int(port), ssl_context=tls_context(), timeout=TIMEOUT)
        else:
            m = imaplib.IMAP4(HOST, int(port), timeout=TIMEOUT)
    except (imaplib.IMAP4.abort, ConnectionError, ssl.SSLError) as e:
        raise NoImap(f"no IMAP greeting on {port}: {e}")
    node = node_of(m.welcome)
    if "--starttls" in opts:
        m.starttls(ssl_context=tls_context())
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    if typ != "OK":
        raise AssertionError(f"SELECT INBOX: {typ} {data}")
    found = None
    for i in range(int(data[0]), 0, -1):
        typ, parts = m.fetch(str(i), "(BODY.PEEK[])")
        raw = b"".join(p[1] for p in parts if isinstance(p, tuple))
        if token.encode() in raw:
            found = raw
            break
    m.logout()
    if found is None:
        raise AssertionError(f"no message with token {token} in INBOX")
    check_bytes(found, token, b"\r\n")
    check_received(found, opts)
    return node


def cmd_pop3(port, login, token, *opts):
    user, password = login.split(":", 1)
    if "--tls" in opts:
        p = poplib.POP3_SSL(HOST, int(port), timeout=TIMEOUT, context=tls_context())
    else:
        p = poplib.POP3(HOST, int(port), timeout=TIMEOUT)
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


def main(argv):
    commands = {"greet": cmd_greet, "send": cmd_send, "pop3": cmd_pop3, "imap": cmd_imap}
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
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
