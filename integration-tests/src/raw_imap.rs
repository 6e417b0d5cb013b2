//! IMAP over a plain socket from Python, for what imaplib cannot send: several literals in one
//! command each waiting for its own `+` (MULTIAPPEND), and responses it does not parse
//! (ESEARCH, ENABLED). The script gets its arguments as JSON in `sys.argv[1]`: `host` and `imap`
//! (the port).

/// Python: `Imap()` connects to `a["host"]:a["imap"]` and reads the greeting; `command(tag,
/// text)` returns every response up to the tagged one (literals included); `append(tag,
/// mailbox, messages)` sends an APPEND of `(options, bytes, non_synchronizing)` messages.
pub const RAW_IMAP: &str = r#"

import socket, sys, json, re
a = json.loads(sys.argv[1])

class Imap:
    def __init__(self):
        self.s = socket.create_connection((a["host"], a["imap"]), timeout=30)
        self.buf = b""
        self.line()
    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"
    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data
    def until_tagged(self, tag):
        """Every response up to the tagged one, literals included, as one bytes object."""
        out = b""
        while True:
            line = self.line()
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                out += self.exact(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                return out
    def command(self, tag, text):
        self.s.sendall(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)
    def append(self, tag, mailbox, messages):
        """APPEND of `messages` ((options, bytes, plus)): a synchronizing literal waits for its
        `+`; a refusal instead of `+` ends the command there."""
        head = tag + b" APPEND " + mailbox
        for options, data, plus in messages:
            head += (b" " + options if options else b"") + b" {%d%s}\r\n" % (len(data), b"+" if plus else b"")
            self.s.sendall(head)
            head = b""
            if not plus:
                reply = self.line()
                if not reply.startswith(b"+"):
                    return reply
            self.s.sendall(data)
        self.s.sendall(b"\r\n")
        return self.until_tagged(tag)
"#;
