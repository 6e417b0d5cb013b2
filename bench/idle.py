"""The client side of bench/idle.sh: opens the sessions, then reads the node's memory and times
a new client. Every address is on loopback: sessions come from 127.20.0.1 upward."""
import argparse
import smtplib
import socket
import time

p = argparse.ArgumentParser()
p.add_argument("--sessions", type=int, required=True)
p.add_argument("--mode", choices=["idle", "greet"], required=True)
p.add_argument("--users", type=int, required=True)
p.add_argument("--msgs", type=int, required=True)
p.add_argument("--imap", required=True)
p.add_argument("--smtp", required=True)
p.add_argument("--pid", required=True)
a = p.parse_args()
host, port = a.imap.rsplit(":", 1)
target = (host, int(port))
BATCH = 500


def rss_kb():
    with open("/proc/%s/status" % a.pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


def source(i):
    # 250 hosts in each /24, 250 /24s in each /16, from 127.20.0.1.
    return "127.%d.%d.%d" % (20 + i // 62500, (i // 250) % 250, 1 + i % 250)


def read_until(s, buf, marker, deadline):
    while marker not in buf:
        if time.time() > deadline:
            raise TimeoutError("no %r in %r" % (marker, buf[-200:]))
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed after %r" % buf[-200:])
        buf += chunk
    return buf


if a.mode == "idle" and a.msgs:
    host_s, port_s = a.smtp.rsplit(":", 1)
    t = time.time()
    with smtplib.SMTP(host_s, int(port_s), timeout=60) as smtp:
        for u in range(1, a.users + 1):
            for m in range(a.msgs):
                body = "Subject: message %d\r\nFrom: bench@example.test\r\n\r\n%s\r\n" % (m, "x" * 1000)
                smtp.sendmail("bench@example.test", ["u%d@example.test" % u], body)
    print("%d messages for each of %d users delivered in %.1f s" % (a.msgs, a.users, time.time() - t))
    time.sleep(2)

before = rss_kb()
print("before the sessions: node VmRSS %d kB" % before)
socks, t = [], time.time()
for start in range(0, a.sessions, BATCH):
    batch = []
    for i in range(start, min(start + BATCH, a.sessions)):
        s = socket.socket()
        s.settimeout(120)
        s.bind((source(i), 0))
        s.connect(target)
        if a.mode == "idle":
            # Pipelined: the node reads them in turn after its greeting.
            user = 1 + i % a.users
            s.sendall(b"a LOGIN u%d@example.test pw\r\nb SELECT INBOX\r\nc IDLE\r\n" % user)
        batch.append(s)
    deadline = time.time() + 120
    for s in batch:
        read_until(s, b"", b"\r\n+ " if a.mode == "idle" else b"* OK", deadline)
    socks.extend(batch)
opened = time.time() - t
time.sleep(5)
after = rss_kb()
what = "in IDLE" if a.mode == "idle" else "greeted"
print(
    "%d sessions %s, opened in %.1f s; node VmRSS %d kB (%.1f KiB a session over the %d kB before)"
    % (len(socks), what, opened, after, (after - before) / max(len(socks), 1), before)
)
times = []
for _ in range(5):
    t = time.time()
    c = socket.create_connection(target, timeout=30)
    buf = read_until(c, b"", b"\r\n", time.time() + 30)
    c.sendall(b"a LOGIN u1@example.test pw\r\nb SELECT INBOX\r\n")
    buf = read_until(c, buf, b"\r\nb OK", time.time() + 30)
    times.append((time.time() - t) * 1000)
    c.close()
    time.sleep(0.2)
times.sort()
print("a new client while they are held: greeting, LOGIN and SELECT in %.1f ms (median of 5; max %.1f)" % (times[2], times[-1]))
print("node VmRSS at the end %d kB" % rss_kb())
