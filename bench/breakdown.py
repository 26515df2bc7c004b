#!/usr/bin/env python3
"""Instructions per request by function, from two callgrind outputs of
bench/instructions.sh (KEEP=1 keeps them): the run with N requests minus the
run with none, divided by N. Start-up and teardown cancel out.

    python3 bench/breakdown.py FULL.out BASE.out N [--top 40] [--min 300]

Prints the inclusive cost (the function and everything it calls) and the self
cost (its own instructions) per request. Callgrind splits a function by the
source file of its (inlined) code: self costs are summed over the pieces, the
inclusive figure is the largest piece (a lower bound), and
names are shortened: generic parameters and closures' paths are kept, crate
paths of the hash registry are dropped.
"""
import re
import subprocess
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")


def costs(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path],
        capture_output=True, text=True, check=True).stdout
    by = defaultdict(int)
    started = False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        m = LINE.match(line)
        if not m:
            continue
        n, rest = int(m.group(1).replace(",", "")), m.group(2)
        rest = re.sub(r"\s+\[[^\]]*\]$", "", rest)  # the object file
        fn = re.split(r"(?<!:):(?!:)", rest, maxsplit=1)[-1]  # drop the source file
        # self cost: summed over the files a function's code is attributed to;
        # inclusive: the largest entry (each file entry already counts the callees)
        by[fn] = max(by[fn], n) if inclusive else by[fn] + n
    return by


def short(fn, width=110):
    fn = fn.replace("core::future::future::Future", "Future").replace("core::pin::Pin<P>", "Pin<P>")
    return fn if len(fn) <= width else fn[: width - 1] + "…"


def table(full, base, n, top, minimum, title):
    rows = sorted(((full[f] - base.get(f, 0)) / n, f) for f in full)
    rows = [(v, f) for v, f in reversed(rows) if v >= minimum][:top]
    print(f"\n{title}\n")
    print("| instr/request | function |\n| ---: | --- |")
    for v, f in rows:
        print(f"| {v:,.0f} | `{short(f)}` |")


def main():
    args = sys.argv[1:]
    top, minimum = 40, 300.0
    if "--top" in args:
        i = args.index("--top"); top = int(args[i + 1]); del args[i:i + 2]
    if "--min" in args:
        i = args.index("--min"); minimum = float(args[i + 1]); del args[i:i + 2]
    full_p, base_p, n = args[0], args[1], int(args[2])
    table(costs(full_p, True), costs(base_p, True), n, top, minimum, "Inclusive (function and its callees)")
    table(costs(full_p, False), costs(base_p, False), n, top, minimum / 2, "Self (the function's own instructions)")


if __name__ == "__main__":
    main()
