#!/usr/bin/env python3
"""Writes the mbox imaptest's stress run APPENDs from (argument: its path): 40 messages, the
same every time, of four kinds: plain text, multipart/alternative with a preamble and an
epilogue, multipart/mixed with a base64 attachment and an attached message/rfc822, and
quoted-printable Latin-1 of growing size."""
import random, email.utils, sys, time
random.seed(7)
out = []
subjects = ["Hello", "Re: meeting", "Fwd: report", "=?utf-8?q?caf=C3=A9?=", "Long subject " * 5, "Q3 numbers"]
for i in range(40):
    date = email.utils.formatdate(1700000000 + i * 3600)
    frm = f"Sender {i} <s{i}@example.org>"
    hdr = f"From: {frm}\nTo: u{i%20+1}@example.test\nSubject: {subjects[i%len(subjects)]} {i}\nDate: {date}\nMessage-ID: <m{i}@example.org>\n"
    kind = i % 4
    if kind == 0:
        body = hdr + "\n" + ("plain body line %d\n" % i) * (1 + i % 7)
    elif kind == 1:
        b = f"b{i}"
        body = hdr + f'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="{b}"\n\npreamble\n--{b}\nContent-Type: text/plain; charset=utf-8\n\nplain {i}\n--{b}\nContent-Type: text/html\n\n<p>html {i}</p>\n--{b}--\nepilogue\n'
    elif kind == 2:
        b = f"m{i}"
        body = hdr + f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{b}"\n\n--{b}\nContent-Type: text/plain\n\nsee attached\n--{b}\nContent-Type: application/octet-stream; name="a.bin"\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="a.bin"\n\nAAECAwQFBgcICQ==\n--{b}\nContent-Type: message/rfc822\n\nFrom: inner@example.org\nSubject: inner {i}\n\ninner body\n--{b}--\n'
    else:
        body = hdr + "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nCaf=E9 =\nsoft break\n" + "x" * (50 * i) + "\n"
    out.append(f"From s{i}@example.org {time.asctime(time.gmtime(1700000000 + i*3600))}\n" + body.replace("\nFrom ", "\n>From ") + "\n")
open(sys.argv[1] if len(sys.argv) > 1 else "stress.mbox", "w").write("".join(out))
