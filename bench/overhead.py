#!/usr/bin/env python3
"""overhead.py PREFIX : the router-overhead table from bench/run.sh --router-overhead's results
PREFIX-overhead-*.json (targets `direct` and `router`, the same node behind both).

For each measure: the median over repeats of each target with the range of the repeats in brackets,
and router/direct as a share of the direct throughput (issue 6's goal: at least 95%)."""
import glob
import json
import statistics
import sys

# (test, label, field, higher_is_better)
MEASURES = [
    ("deliver", "SMTP delivery, msgs/s (accept to mailbox)", "msgs_per_s", True),
    ("deliver", "SMTP acceptance, msgs/s (to last 250)", "accept_msgs_per_s", True),
    ("imap", "IMAP LOGIN+SELECT+FETCH meta of 1000, s", "login_select_fetch_meta_s", False),
    ("imap", "IMAP FETCH BODY.PEEK[] of 1000, s", "fetch_body_s", False),
    ("pop3", "POP3 RETR of 1000, s", "retr_all_s", False),
]


def main():
    prefix = sys.argv[1]
    rows = []
    for f in sorted(glob.glob(prefix + "-overhead-*.json")):
        rows += json.load(open(f))["results"]
    print("| measure | C | direct | via router | router / direct throughput |")
    print("|---|---:|---:|---:|---:|")
    for test, label, field, higher in MEASURES:
        groups = sorted({r.get("conc", "") for r in rows if r["test"] == test and field in r}, key=str)
        for conc in groups:
            val, spread = {}, {}
            for target in ("direct", "router"):
                xs = [r[field] for r in rows if r["test"] == test and r["target"] == target
                      and r.get("conc", "") == conc and field in r and (test != "deliver" or r.get("delivered"))]
                val[target] = statistics.median(xs) if xs else None
                spread[target] = (min(xs), max(xs)) if len(xs) > 1 else None
            d, v = val["direct"], val["router"]
            share = "" if not d or not v else "%.1f%%" % (100 * (v / d if higher else d / v))
            num = "%.1f" if higher else "%.3f"

            def cell(target):
                if val[target] is None:
                    return "-"
                if spread[target] is None:
                    return num % val[target]
                return (num + " [" + num + "-" + num + "]") % ((val[target],) + spread[target])
            print("| %s | %s | %s | %s | %s |" % (label, conc, cell("direct"), cell("router"), share))


if __name__ == "__main__":
    main()
