#!/usr/bin/python3
"""Instructions per lookup, counted by callgrind: the figure bench/RESULTS.md reports.

    bench/instructions.py [--build build] [--binary PATH ...] [--lookups 1000]

For each binary: a pipe-mode session of 1 lookup and one of 1 + N lookups
(`recipient postmaster@example.org`, an exact map, loglevel info) against a
throwaway MariaDB with the test fixtures; (Ir(1+N) - Ir(1)) / N is what one
lookup costs, start-up and the first connection left out.  Needs valgrind
(make deps-bench).  Stops the MariaDB it started.
"""

import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import harness as h  # noqa: E402

KEY = ("recipient", "postmaster@example.org")


def instructions(binary, cfg_path, lookups):
    out = h.tmpfile("callgrind.out")
    request = b"".join(h.encode("%s %s" % KEY) for _ in range(lookups))
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "-c", cfg_path],
                       input=request, capture_output=True, timeout=300)
    replies = h.replies(p.stdout)
    if len(replies) != lookups or not all(r.startswith(b"OK ") for r in replies):
        raise SystemExit("%s: expected %d OK replies, got %r" % (binary, lookups, replies[:3]))
    m = re.search(rb"Collected : (\d+)", p.stderr) or re.search(rb"refs: *([\d,]+)", p.stderr)
    if not m:
        raise SystemExit("%s: no instruction count in callgrind's output" % binary)
    return int(m.group(1).replace(b",", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--binary", action="append", help="a sockmapd to count (default BUILD/sockmapd); repeatable")
    ap.add_argument("--lookups", type=int, default=1000)
    args = ap.parse_args()
    h.require_tool("valgrind")
    binaries = args.binary or [os.path.join(args.build, "sockmapd")]
    db = h.MariaDB(fixtures=True)
    try:
        db.start()
        cfg = h.base_config(db, sysconfig={"loglevel": "info"})
        path = h.temp_config(cfg)
        for b in binaries:
            one = instructions(b, path, 1)
            many = instructions(b, path, 1 + args.lookups)
            print("%s: %d instructions per lookup (%d lookups: %d; 1 lookup: %d)"
                  % (b, round((many - one) / args.lookups), 1 + args.lookups, many, one), flush=True)
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
