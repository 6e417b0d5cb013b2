#!/usr/bin/env python3
"""report.py PREFIX|FILE.json... : Markdown tables from mailbench JSON results.

With a PREFIX (bench/results/20250101-120000) it reads PREFIX-{main,limited}-{small,fetch,big}.json
that bench/run.sh writes; with explicit files it treats them all as one phase."""
import glob
import json
import os
import statistics
import sys

TARGETS = ["pfdc", "N1_BASE", "N1", "N2", "N2_STORE", "N2_REPL"]  # N1_BASE: bench/run.sh with BASELINE_SIRMS
QUOTA = os.environ.get("CPU_QUOTA", "?") + "%"
PHASE_TITLE = {
    "main": "No CPU limits (all processes share the machine's 2 cores)",
    "limited": "Scale-out simulation: each SIRMS mail node and storage node limited to %s of one CPU (cgroup cpu quota; routers unlimited)",
}


def load(files):
    out = []
    for f in files:
        with open(f) as fh:
            out += json.load(fh)["results"]
    return out


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f="%.1f"):
    return "–" if v is None else f % v


def deliver_rows(res):
    dl = [r for r in res if r["test"] == "deliver"]
    rows = {}
    for r in dl:
        rows.setdefault((r["n"], r["conc"], r["target"]), []).append(r)
    out = {}
    for key, rs in rows.items():
        ok = [r for r in rs if r.get("delivered")]
        n = key[0]
        cpu = med([r["cpu"]["servers_total_cpu_s"] for r in rs if r["cpu"]["servers_cpu_s"]])
        per = {}
        for r in rs:
            for k, v in r["cpu"]["servers_cpu_s"].items():
                per.setdefault(k, []).append(v)
        out[key] = {
            "runs": len(rs), "ok": len(ok),
            "rate": med([r["msgs_per_s"] for r in ok]),
            "ms": med([r["ms_per_msg"] for r in ok]),
            "accept": med([r["accept_msgs_per_s"] for r in rs]),
            "p50": med([r["smtp_lat_ms"]["p50"] for r in rs]),
            "p99": med([r["smtp_lat_ms"]["p99"] for r in rs]),
            "cpu_ms": None if cpu is None else 1000 * cpu / n,
            "cpu_per": {k: 1000 * statistics.median(v) / n for k, v in per.items()},
            "other": med([r["cpu"]["other_cpu_s"] / max(r["cpu"]["wall_s"], 1e-9) for r in rs]),
            "errors": sum(r["failed"] for r in rs),
        }
    return out


def deliver_table(res, w):
    rows = deliver_rows(res)
    if not rows:
        return rows
    w("| N | C | target | delivered msg/s | ms/msg | accepted msg/s (last 250) | SMTP txn p50 / p99 ms | server CPU ms/msg (by process) | other load (cores) | × pfdc |\n")
    w("|---:|---:|---|---:|---:|---:|---:|---|---:|---:|\n")
    for n, c in sorted({(k[0], k[1]) for k in rows}):
        base = rows.get((n, c, "pfdc"), {}).get("rate")
        for t in TARGETS:
            r = rows.get((n, c, t))
            if not r:
                continue
            per = ", ".join("%s %.2f" % (k, v) for k, v in r["cpu_per"].items())
            note = "" if r["ok"] == r["runs"] else " (%d of %d runs not fully delivered)" % (r["runs"] - r["ok"], r["runs"])
            if r["errors"]:
                note += " (%d SMTP errors)" % r["errors"]
            ratio = "" if (t == "pfdc" or not base or not r["rate"]) else "%.2f" % (r["rate"] / base)
            w("| %d | %d | %s | %s%s | %s | %s | %s / %s | %s (%s) | %s | %s |\n" % (
                n, c, t, fmt(r["rate"]), note, fmt(r["ms"], "%.2f"), fmt(r["accept"]), fmt(r["p50"], "%.1f"),
                fmt(r["p99"], "%.1f"), fmt(r["cpu_ms"], "%.2f"), per, fmt(r["other"], "%.2f"), ratio))
    w("\n")
    return rows


def ratio_table(rows, w):
    keys = sorted({(k[0], k[1]) for k in rows})
    if not keys:
        return
    w("| N | C | N2 / N1 | N2_STORE / N1 | N2_REPL / N1 | N1 / pfdc | N2 / pfdc | N2_STORE / pfdc | N2_REPL / pfdc |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for n, c in keys:
        g = lambda t: rows.get((n, c, t), {}).get("rate")
        q = lambda a, b: "%.2f" % (g(a) / g(b)) if g(a) and g(b) else "–"
        w("| %d | %d | %s | %s | %s | %s | %s | %s | %s |\n" % (
            n, c, q("N2", "N1"), q("N2_STORE", "N1"), q("N2_REPL", "N1"), q("N1", "pfdc"), q("N2", "pfdc"),
            q("N2_STORE", "pfdc"), q("N2_REPL", "pfdc")))
    w("\n")
    sizes = sorted({k[0] for k in keys})
    if len(sizes) > 1:
        w("Growth of ms/msg from N=%d to N=%d (goal: ≤ 10%%):\n\n| target | C | ms/msg N=%d | ms/msg N=%d | growth |\n|---|---:|---:|---:|---:|\n"
          % (sizes[0], sizes[-1], sizes[0], sizes[-1]))
        for c in sorted({k[1] for k in keys}):
            for t in TARGETS:
                a = rows.get((sizes[0], c, t), {}).get("ms")
                b = rows.get((sizes[-1], c, t), {}).get("ms")
                if a and b:
                    w("| %s | %d | %.2f | %.2f | %+.0f%% |\n" % (t, c, a, b, 100 * (b / a - 1)))
        w("\n")


def fetch_tables(res, w):
    im = [r for r in res if r["test"] == "imap"]
    if im:
        w("IMAP, user with %s messages, fresh session per repeat (seconds, median of %d):\n\n" %
          (im[0]["exists"], len(im) // len({r["target"] for r in im})))
        w("| target | LOGIN | SELECT | UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE) | the same, first repeat | UID FETCH 1:* BODY.PEEK[] | SEARCH HEADER | SEARCH BODY | server CPU s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for t in TARGETS:
            rs = [r for r in im if r["target"] == t]
            if rs:
                g = lambda k: fmt(med([r[k] for r in rs]), "%.4f")
                # The first repeat after the fill is the one that fills a server's cache (both
                # Dovecot's and SIRMS's), so it is shown apart from the median.
                first = min(rs, key=lambda r: r.get("rep", 0))
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" % (
                    t, g("login_s"), g("select_s"), g("fetch_meta_s"), fmt(first["fetch_meta_s"], "%.4f"),
                    g("fetch_body_s"), g("search_header_s"), g("search_body_s"),
                    fmt(med([r["cpu"]["servers_total_cpu_s"] for r in rs]), "%.2f")))
        w("\n")
    po = [r for r in res if r["test"] == "pop3"]
    if po:
        w("POP3, same user: USER/PASS, LIST, RETR 1..%s (seconds, median):\n\n" % po[0]["msgs"])
        w("| target | login | LIST | RETR all | total | RETR msgs/s | server CPU s | × pfdc (LIST+RETR time) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
        base = med([r["list_s"] + r["retr_all_s"] for r in po if r["target"] == "pfdc"])
        for t in TARGETS:
            rs = [r for r in po if r["target"] == t]
            if rs:
                lr = med([r["list_s"] + r["retr_all_s"] for r in rs])
                w("| %s | %s | %s | %s | %s | %s | %s | %s |\n" % (
                    t, fmt(med([r["login_s"] for r in rs]), "%.3f"), fmt(med([r["list_s"] for r in rs]), "%.3f"),
                    fmt(med([r["retr_all_s"] for r in rs]), "%.3f"), fmt(med([r["total_s"] for r in rs]), "%.3f"),
                    fmt(med([r["msgs"] / r["retr_all_s"] for r in rs if r["retr_all_s"]]), "%.0f"),
                    fmt(med([r["cpu"]["servers_total_cpu_s"] for r in rs]), "%.2f"),
                    "" if t == "pfdc" or not base else "%.2f faster" % (base / lr) if lr < base else "%.2f slower" % (lr / base)))
        w("\n")


def main():
    w = sys.stdout.write
    args = sys.argv[1:]
    if len(args) == 1 and not args[0].endswith(".json"):
        phases = []
        for ph in ("main", "limited"):
            files = sorted(glob.glob(args[0] + "-%s-*.json" % ph))
            if files:
                phases.append((ph, files))
    else:
        phases = [("main", args)]
    for ph, files in phases:
        res = load(files)
        title = PHASE_TITLE[ph] % QUOTA if ph == "limited" else PHASE_TITLE[ph]
        w("### %s\n\n" % title)
        w("Files: %s\n\n" % ", ".join(os.path.basename(f) for f in files))
        rows = deliver_table(res, w)
        ratio_table(rows, w)
        fetch_tables(res, w)


if __name__ == "__main__":
    main()
