#!/usr/bin/python3
"""Run one black-box suite (or some of its tests) several times, optionally with the CPUs kept busy.

    tests/repeat.py --build build --times 10 [--busy 2] bb_faults [test-name-or-glob ...]

--busy N starts N CPU-bound processes before the runs and stops them, by pid, after.
Prints each run's result line and, last, how many runs passed: a check that a
suite's timing holds on a loaded machine, not part of `make check`.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run meanwhile")
    ap.add_argument("suite")
    ap.add_argument("tests", nargs="*")
    a = ap.parse_args()
    env = dict(os.environ, SOCKMAPD=os.path.abspath(os.path.join(a.build, "sockmapd")))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    passed = 0
    try:
        for i in range(a.times):
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, os.path.join(HERE, a.suite + ".py")] + a.tests, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = r.stdout.decode(errors="replace").splitlines()
            last = out[-1] if out else "(no output)"
            fails = [l for l in out if l.startswith("FAIL")]
            passed += r.returncode == 0
            print("run %d: %s (%.0fs)%s" % (i + 1, last, time.monotonic() - t0,
                                            "".join("\n    " + f[:300] for f in fails)), flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print("%d of %d runs passed (%d busy processes)" % (passed, a.times, a.busy))
    return 0 if passed == a.times else 1


if __name__ == "__main__":
    sys.exit(main())
