#!/usr/bin/python3
"""Run every sockmapd test suite against a build directory; builds nothing.

    tests/run_all.py --build build [--only unit,bb_core] [--skip bb_system] [--timeout SECS]

Runs BUILD/unit_tests (Boost.Test), then each tests/bb_*.py in sorted order
with SOCKMAPD=BUILD/sockmapd in the environment (the rest of the environment
is passed through: KEEP_TMP, TIMEOUT_SCALE, ...), streaming their output.
Prints a per-suite summary and, as the very last line, `N passed, N failed`.
Exit status 1 if anything failed.  A suite that crashes, hangs past its
time limit, or prints no result line counts as failed; nothing is skipped
unless named with --skip (the sanitizer pass skips bb_system, which tests
the .deb built from the tree, not the build directory's binary); skipped
suites are listed in the summary.
"""

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT_RE = re.compile(r"^(\d+) passed, (\d+) failed\s*$")
# Boost.Test report lines: "  12 test cases out of 14 passed" / "1 test case out of 1 failed"
BOOST_RE = re.compile(r"^\s*(\d+) test cases? out of (\d+) (passed|failed|skipped|aborted)\b")
BOOST_MODULE_RE = re.compile(r'^\s*Test module "[^"]*" has (passed|failed)')


def run_streaming(cmd, env, timeout):
    """Run cmd with stdout+stderr merged, echoing lines; (returncode or None if killed, lines, timed_out)."""
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
    except OSError as e:
        line = "run_all: cannot start %s: %s" % (cmd[0], e)
        print(line, flush=True)
        return None, [line], False
    timed_out = []

    def on_timeout():
        timed_out.append(True)
        print("run_all: %s exceeded %ds, stopping it" % (os.path.basename(cmd[-1]), timeout), flush=True)
        try:
            os.kill(p.pid, signal.SIGTERM)  # the suite stops its own servers on SIGTERM
        except ProcessLookupError:
            return
        for _ in range(150):
            if p.poll() is not None:
                break
            time.sleep(0.1)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # its process group: whatever it left behind
        except (ProcessLookupError, PermissionError):
            pass

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    lines = []
    try:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            print(line, flush=True)
        p.wait()
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, lines, bool(timed_out)


def describe_rc(rc):
    if rc is None:
        return "did not start"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit status %d" % rc


def run_unit(build, env, timeout):
    exe = os.path.join(build, "unit_tests")
    if not os.access(exe, os.X_OK):
        print("FAIL unit_tests: %s missing (make %s)" % (exe, exe), flush=True)
        return 0, 1, "binary missing"
    rc, lines, timed_out = run_streaming([exe, "--report_level=detailed", "--color_output=no"], env, timeout)
    passed = failed = 0
    found = False
    in_module = False
    for line in lines:
        if BOOST_MODULE_RE.match(line):
            in_module = found = True
            continue
        m = BOOST_RE.match(line)
        if m and in_module:
            n, _, what = int(m.group(1)), int(m.group(2)), m.group(3)
            if what == "passed":
                passed += n
            elif what == "failed":  # aborted cases are counted among the failed
                failed += n
        elif in_module and line.strip().startswith("Test suite"):
            in_module = False  # only the module's own totals, not the per-suite breakdown
    note = describe_rc(rc)
    if timed_out:
        failed += 1
        note = "timed out"
    elif not found:
        failed += 1
        note = "no Boost.Test report (%s)" % note
    elif rc != 0 and failed == 0:
        failed += 1  # crashed or failed after the report, or a setup error
        note = "report clean but %s" % note
    return passed, failed, note


def run_suite(path, env, timeout):
    rc, lines, timed_out = run_streaming([sys.executable, path], env, timeout)
    last = next((l for l in reversed(lines) if l.strip()), "")
    m = RESULT_RE.match(last)
    note = describe_rc(rc)
    if timed_out:
        passed = int(m.group(1)) if m else 0
        return passed, (int(m.group(2)) if m else 0) + 1, "timed out"
    if not m:
        return 0, 1, "no result line (%s)" % note
    passed, failed = int(m.group(1)), int(m.group(2))
    if rc != 0 and failed == 0:
        failed = 1
        note = "result line clean but %s" % note
    return passed, failed, note


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="build directory holding sockmapd and unit_tests")
    ap.add_argument("--only", action="append", default=[],
                    help="suite names to run (unit, bb_core, ...); comma-separated or repeated")
    ap.add_argument("--skip", action="append", default=[],
                    help="suite names not to run; comma-separated or repeated")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("SUITE_TIMEOUT", "1200")),
                    help="seconds per suite (default 1200, env SUITE_TIMEOUT)")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    only = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
    only = {n[:-3] if n.endswith(".py") else n for n in only}
    skip = {n.strip() for item in args.skip for n in item.split(",") if n.strip()}
    skip = {n[:-3] if n.endswith(".py") else n for n in skip}
    env = dict(os.environ)
    env["SOCKMAPD"] = os.path.join(build, "sockmapd")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"

    suites = [("unit", None)]
    suites += [(os.path.basename(p)[:-3], p) for p in sorted(glob.glob(os.path.join(HERE, "bb_*.py")))]
    results = []
    if only:
        unknown = only - {name for name, _ in suites}
        for name in sorted(unknown):
            results.append((name, 0, 1, "no such suite"))
        suites = [s for s in suites if s[0] in only]
    unknown = skip - {name for name, _ in suites} - only
    for name in sorted(unknown):
        results.append((name, 0, 1, "--skip: no such suite"))
    skipped = [name for name, _ in suites if name in skip]
    suites = [s for s in suites if s[0] not in skip]

    for name, path in suites:
        print("=== %s" % name, flush=True)
        started = time.monotonic()
        if path is None:
            p, f, note = run_unit(build, env, args.timeout)
        else:
            p, f, note = run_suite(path, env, args.timeout)
        results.append((name, p, f, "%s, %.1fs" % (note, time.monotonic() - started)))

    total_p = sum(r[1] for r in results)
    total_f = sum(r[2] for r in results)
    print("")
    print("=== summary (%s)" % build)
    width = max([len(r[0]) for r in results] + [5])
    for name, p, f, note in results:
        print("%-*s  %4d passed, %3d failed   %s%s" % (width, name, p, f, "FAILED  " if f else "", note))
    if skipped:
        print("skipped on request: %s" % ", ".join(skipped))
    print("%d passed, %d failed" % (total_p, total_f), flush=True)
    return 1 if total_f else 0


if __name__ == "__main__":
    sys.exit(main())
