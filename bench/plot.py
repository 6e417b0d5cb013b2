#!/usr/bin/env python3
"""plot.py PREFIX[,PREFIX...] OUT.png [QUOTA] : the paper's Figure 7 (mean time per mail vs number
of mails, log x) from bench/run.sh's results PREFIX-{main,limited}-*.json (several comma-separated
prefixes are merged, e.g. a default run and a separate N=10^5 run); installs matplotlib with pip if
missing."""
import glob
import importlib
import json
import statistics
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    importlib.invalidate_caches()
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"pfdc": ("Postfix+Dovecot", "tab:gray", "s", "--"), "N1": ("SIRMS N1", "tab:blue", "o", "-"),
         "N2": ("SIRMS N2", "tab:green", "^", "-"), "N2_STORE": ("SIRMS N2_STORE", "tab:orange", "D", "-"),
         "N2_REPL": ("SIRMS N2_REPL (2 copies)", "tab:purple", "v", "-")}
TITLE = {"main": "no CPU limit", "limited": "each node at %s of a CPU"}


def main():
    prefix, out = sys.argv[1], sys.argv[2]
    quota = sys.argv[3] if len(sys.argv) > 3 else "a fraction"
    phases = []
    for ph in ("main", "limited"):
        res = []
        for f in sorted(f for p in prefix.split(",") for f in glob.glob(p + "-%s-*.json" % ph)):
            res += [r for r in json.load(open(f))["results"] if r["test"] == "deliver" and r.get("delivered")]
        if res:
            phases.append((ph, res))
    concs = sorted({r["conc"] for _, res in phases for r in res})
    fig, axes = plt.subplots(len(phases), len(concs), figsize=(5.2 * len(concs), 3.9 * len(phases)), squeeze=False)
    for i, (ph, res) in enumerate(phases):
        for j, c in enumerate(concs):
            ax = axes[i][j]
            for t, (label, color, marker, ls) in STYLE.items():
                pts = {}
                for r in res:
                    if r["target"] == t and r["conc"] == c:
                        pts.setdefault(r["n"], []).append(r["ms_per_msg"])
                if pts:
                    xs = sorted(pts)
                    ax.plot(xs, [statistics.median(pts[x]) for x in xs], marker=marker, color=color, ls=ls, label=label)
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("number of mails")
            ax.set_ylabel("time per mail (ms), until in mailbox")
            ax.set_title("%s, %d concurrent client%s" % (TITLE[ph] % quota if ph == "limited" else TITLE[ph], c,
                                                         "" if c == 1 else "s"), fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("SIRMS vs Postfix+Dovecot: mean time to deliver one mail (cf. the paper's Figure 7)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
