#!/usr/bin/env python3
"""ready.py SECONDS SMTP,IMAP [SMTP,IMAP...]: wait until every target accepts RCPT for u1 and
u100 and an IMAP LOGIN of both, from both client source halves (127.77.1.x and 127.77.2.x),
so a benchmark never starts before a cluster's directory has reached its nodes."""
import socket
import sys
import time

SOURCES = ["127.77.1.1", "127.77.2.1"]
USERS = ["u1@example.test", "u100@example.test"]


def conn(addr, src):
    h, p = addr.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(10)
    s.bind((src, 0))
    s.connect((h, int(p)))
    return s, s.makefile("rb")


def smtp_ok(addr, src):
    s, f = conn(addr, src)
    try:
        def reply():
            while True:
                line = f.readline()
                if not line or line[3:4] != b"-":
                    return line
        if not reply().startswith(b"2"):
            return False
        s.sendall(b"EHLO ready.test\r\n")
        if not reply().startswith(b"2"):
            return False
        s.sendall(b"MAIL FROM:<bench@example.test>\r\n")
        if not reply().startswith(b"2"):
            return False
        for u in USERS:
            s.sendall(b"RCPT TO:<%s>\r\n" % u.encode())
            if not reply().startswith(b"2"):
                return False
        s.sendall(b"RSET\r\nQUIT\r\n")
        return True
    finally:
        s.close()


def imap_ok(addr, src):
    for u in USERS:
        s, f = conn(addr, src)
        try:
            f.readline()
            s.sendall(b'a LOGIN "%s" "pw"\r\n' % u.encode())
            while True:
                line = f.readline()
                if not line:
                    return False
                if line.startswith(b"a "):
                    if not line.startswith(b"a OK"):
                        return False
                    break
            s.sendall(b"b LOGOUT\r\n")
        finally:
            s.close()
    return True


def main():
    limit = time.time() + float(sys.argv[1])
    for spec in sys.argv[2:]:
        smtp, imap = spec.split(",")
        while True:
            try:
                if all(smtp_ok(smtp, src) and imap_ok(imap, src) for src in SOURCES):
                    break
            except OSError:
                pass
            if time.time() > limit:
                sys.exit("target %s not ready" % spec)
            time.sleep(0.5)
    print("ready: " + " ".join(sys.argv[2:]), file=sys.stderr)


if __name__ == "__main__":
    main()
