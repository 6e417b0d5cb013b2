#!/usr/bin/env python3
"""Peak memory of one node while many clients send it large messages at once (issue 28).

    bench/rss.py [--proto smtp|imap] [--clients 100] [--size-mb 40] [--ip 127.0.31.10] BIN [BIN...]

For each `sirms` binary in turn: starts ONE `sirms node` on --ip (free ports, a fresh data dir
under /tmp, removed afterwards), makes one small delivery so the runtime is warm, then has
--clients threads each send one --size-mb message at the same moment, over SMTP (DATA) or
IMAP (APPEND with a LITERAL+ literal). /proc/PID/status is sampled every 10 ms; printed, per
binary: idle VmRSS and RssAnon, their peaks while sending, VmHWM, the time taken and how many
messages reached the mailbox. RssAnon is the figure that matters: anonymous memory cannot be
dropped under pressure, while RssFile (a spill file's mapping) is page cache the kernel can.

A run is stopped (and says so) when the machine's MemAvailable falls below --min-avail-mb,
so that measuring the old behaviour cannot push a shared machine into the OOM killer.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

USER, PASSWORD = "u1@example.test", "pw"


def free_port(ip):
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def mem_available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def body(size):
    """CRLF lines, none starting with a dot: the same octets after SMTP transparency."""
    line = b"x" * 76 + b"\r\n"
    return memoryview(line * (size // len(line)))


def read_reply(f):
    while True:
        line = f.readline()
        if not line:
            raise IOError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return line


def send_smtp(addr, n, data):
    s = socket.create_connection(addr, timeout=600)
    f = s.makefile("rb")
    read_reply(f)
    for cmd in (b"EHLO rss.bench", b"MAIL FROM:<bench@remote.test>", b"RCPT TO:<%s>" % USER.encode(), b"DATA"):
        s.sendall(cmd + b"\r\n")
        reply = read_reply(f)
        if reply[:1] not in (b"2", b"3"):
            raise IOError("%r: %r" % (cmd, reply))
    s.sendall(b"Subject: rss %d\r\n\r\n" % n)
    s.sendall(data)
    s.sendall(b".\r\n")
    reply = read_reply(f)
    s.sendall(b"QUIT\r\n")
    s.close()
    if not reply.startswith(b"250"):
        raise IOError("end of data: %r" % reply)


def send_imap(addr, n, data):
    s = socket.create_connection(addr, timeout=600)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
    while not f.readline().startswith(b"a "):
        pass
    head = b"Subject: rss %d\r\n\r\n" % n
    s.sendall(b"b APPEND INBOX {%d+}\r\n" % (len(head) + len(data)))
    s.sendall(head)
    s.sendall(data)
    s.sendall(b"\r\n")
    while True:
        line = f.readline()
        if not line:
            raise IOError("connection closed")
        if line.startswith(b"b "):
            break
    s.sendall(b"c LOGOUT\r\n")
    s.close()
    if not line.startswith(b"b OK"):
        raise IOError("APPEND: %r" % line)


def stored(data_dir):
    n = 0
    for root, _, files in os.walk(os.path.join(data_dir, "store", "mail")):
        if os.path.basename(root) in ("cur", "new"):
            n += len(files)
    return n


def run(binary, args, data):
    run_dir = tempfile.mkdtemp(prefix="sirms-rss.")
    ip = args.ip
    ports = {k: free_port(ip) for k in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")}
    listen = "\n".join('%s = "%s:%d"' % (k, ip, p) for k, p in ports.items())
    with open(os.path.join(run_dir, "node.toml"), "w") as f:
        f.write(
            """hostname = "rss.example.test"
data_dir = "%s/data"
allow_plaintext_auth = true
[listen]
%s
[outbound]
smarthost = "127.0.0.9:9"
[limits]
max_connections = %d
max_connections_per_ip = %d
max_message_size = %d
imap_max_append = %d
[directory]
domains = ["example.test"]
users = [ { address = "%s", password = "{plain}%s" } ]
"""
            % (run_dir, listen, args.clients + 50, args.clients + 50, 2 * len(data) + 4096, 2 * len(data) + 4096, USER, PASSWORD)
        )
    log = open(os.path.join(run_dir, "node.log"), "w")
    env = dict(os.environ, RUST_LOG="warn")
    node = subprocess.Popen([binary, "node", "-c", os.path.join(run_dir, "node.toml")], stdout=log, stderr=log, env=env)
    try:
        addr = (ip, ports[args.proto])
        for _ in range(300):
            try:
                socket.create_connection(addr, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        send = send_smtp if args.proto == "smtp" else send_imap
        send(addr, -1, body(1000))
        time.sleep(0.5)
        idle = status(node.pid)
        peaks = dict(idle)
        stop, aborted = threading.Event(), []

        def sample():
            while not stop.is_set():
                st = status(node.pid)
                for k, v in st.items():
                    peaks[k] = max(peaks.get(k, 0), v)
                if mem_available_mb() < args.min_avail_mb:
                    aborted.append("MemAvailable below %d MB: stopped" % args.min_avail_mb)
                    node.kill()
                    return
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        errors = []
        start = threading.Barrier(args.clients)

        def client(n):
            try:
                start.wait()
                send(addr, n, data)
            except Exception as e:  # noqa: BLE001 - reported, not raised
                errors.append(repr(e))

        t = time.time()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.time() - t
        stop.set()
        sampler.join()
        final = status(node.pid)
        return {
            "binary": binary,
            "idle_rss": idle.get("VmRSS", 0),
            "idle_anon": idle.get("RssAnon", 0),
            "peak_rss": peaks.get("VmRSS", 0),
            "peak_anon": peaks.get("RssAnon", 0),
            "peak_file": peaks.get("RssFile", 0),
            "hwm": final.get("VmHWM", peaks.get("VmHWM", 0)),
            "took": took,
            "stored": stored(os.path.join(run_dir, "data")) - 1,
            "errors": errors,
            "aborted": aborted,
        }
    finally:
        node.kill()
        node.wait()
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proto", choices=("smtp", "imap"), default="smtp")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--size-mb", type=int, default=40)
    p.add_argument("--ip", default="127.0.31.10")
    p.add_argument("--min-avail-mb", type=int, default=2048)
    p.add_argument("binaries", nargs="+")
    args = p.parse_args()
    data = body(args.size_mb * 1000 * 1000)
    print("%d concurrent %d MB messages over %s" % (args.clients, args.size_mb, args.proto.upper()))
    print("| binary | idle VmRSS | idle RssAnon | peak VmRSS | peak RssAnon | peak RssFile | VmHWM | stored | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for binary in args.binaries:
        r = run(binary, args, data)
        mb = lambda kib: "%d MB" % (kib // 1024)  # noqa: E731
        note = "; ".join(r["aborted"] + (["%d errors, first: %s" % (len(r["errors"]), r["errors"][0])] if r["errors"] else []))
        print(
            "| %s | %s | %s | %s | %s | %s | %s | %d/%d | %.0f s |%s"
            % (binary, mb(r["idle_rss"]), mb(r["idle_anon"]), mb(r["peak_rss"]), mb(r["peak_anon"]), mb(r["peak_file"]),
               mb(r["hwm"]), r["stored"], args.clients, r["took"], " " + note if note else "")
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
