#!/usr/bin/env python3
"""mailbench.py (../../shared/bench) with client connections spread over K loopback
source addresses.

SIRMS routes by the client's source address, so a load generator that connects from
127.0.0.1 only would reach one node of a 2-node cluster. This wrapper imports the shared
mailbench unchanged and replaces the one call it makes to open a TCP connection
(`socket.create_connection`) with one that binds each new connection to the next address
of --sources (round robin). Every target gets the same treatment, so the side-by-side
comparison stays fair. Everything else (arguments, tests, timing, JSON, tables) is
mailbench's own.

Extra options (removed before mailbench parses the rest):
  --sources A,B,C      client source addresses, used round robin (default: none = kernel's choice)
  --fetch-source A     source address for the imap/pop3 tests and their fill (default: first of --sources),
                       so that every repeat of those tests reaches the same node
  --mailbench PATH     mailbench.py to use (default: $MAILBENCH or /work/shared/bench/mailbench.py)
"""
import importlib.util
import itertools
import os
import socket
import sys
import threading

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the port at connect(), not bind()


def pop_opt(argv, name, default=None):
    if name in argv:
        i = argv.index(name)
        val = argv[i + 1]
        del argv[i:i + 2]
        return val
    return default


def main():
    argv = sys.argv[1:]
    sources = [s for s in (pop_opt(argv, "--sources", "") or "").split(",") if s]
    fetch_source = pop_opt(argv, "--fetch-source", sources[0] if sources else None)
    path = pop_opt(argv, "--mailbench", os.environ.get("MAILBENCH", "/work/shared/bench/mailbench.py"))
    spec = importlib.util.spec_from_file_location("mailbench", path)
    mb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mb)

    if sources:
        cycle = itertools.cycle(sources)
        lock = threading.Lock()
        pinned = [None]
        orig = socket.create_connection

        def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kw):
            host, port = address[0], address[1]
            if source_address is not None or not host.startswith("127."):
                return orig(address, timeout, source_address, **kw)
            with lock:
                src = pinned[0] or next(cycle)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    s.settimeout(timeout)
                s.connect((host, port))
                return s
            except BaseException:
                s.close()
                raise

        mb.socket.create_connection = create_connection

        def pin(fn):
            def wrapped(*a, **k):
                pinned[0] = fetch_source
                try:
                    return fn(*a, **k)
                finally:
                    pinned[0] = None
            return wrapped

        for name in ("prepare_fetch_user", "run_imap", "run_pop3"):
            setattr(mb, name, pin(getattr(mb, name)))
        print("# client sources (round robin): %s; imap/pop3 tests from %s" % (",".join(sources), fetch_source),
              flush=True)

    sys.argv = [path] + argv
    mb.main()


if __name__ == "__main__":
    main()
