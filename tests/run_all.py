#!/usr/bin/python3
"""Run sockmapd's tests against a build directory; builds nothing.

    tests/run_all.py --build build [--only unit,bb_core] [--skip bb_system] [--fast] [--jobs N]
                     [--timeout SECS] [-- PYTEST-ARGS...]

Runs BUILD/unit_tests (Boost.Test) and, beside them, the black-box suites
tests/bb_*.py with pytest (tests/lib/harness_pytest.py), SOCKMAPD=BUILD/sockmapd
in the environment (the rest of the environment is passed through: KEEP_TMP,
TIMEOUT_SCALE, ...), streaming their output.  With --jobs 2 (the default;
4 with --fast) the suites run side by side on that many pytest-xdist
workers, a suite's cases together and in order, the container suites one after another.  --fast
leaves out the cases marked root, container or slow (make check-fast).
Prints a per-suite summary and, as the very last line, `N passed, N failed`.
Exit status 1 if anything failed.  A suite that cannot be imported, a case
that fails, errs in set-up or teardown, hangs past its time limit or skips
counts as failed; nothing is left out unless named with --skip (the
sanitizer pass skips bb_system, which tests the .deb built from the tree,
not the build directory's binary); skipped suites are listed in the summary.
"""

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAST = "not root and not container and not slow"
# Boost.Test report lines: "  12 test cases out of 14 passed" / "1 test case out of 1 failed"
BOOST_RE = re.compile(r"^\s*(\d+) test cases? out of (\d+) (passed|failed|skipped|aborted)\b")
BOOST_MODULE_RE = re.compile(r'^\s*Test module "[^"]*" has (passed|failed)')


def run_streaming(cmd, env, timeout, name, echo=True):
    """Run cmd with stdout+stderr merged, echoing lines (unless not `echo`); (returncode or None if
    killed, lines, timed_out)."""
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
        print("run_all: %s exceeded %ds, stopping it" % (name, timeout), flush=True)
        try:
            os.kill(p.pid, signal.SIGTERM)  # the suites stop their own servers on SIGTERM
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
            if echo:
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


def run_unit(build, env, timeout, echo=True):
    exe = os.path.join(build, "unit_tests")
    if not os.access(exe, os.X_OK):
        print("FAIL unit_tests: %s missing (make %s)" % (exe, exe), flush=True)
        return 0, 1, "binary missing"
    rc, lines, timed_out = run_streaming([exe, "--report_level=detailed", "--color_output=no"], env, timeout,
                                         "unit_tests", echo)
    if not echo:
        print("=== unit\n" + "\n".join(lines), flush=True)
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


def run_blackbox(names, env, timeout, jobs, fast, extra):
    """pytest over the named suites; [(name, passed, failed, note)] per suite."""
    fd, report = tempfile.mkstemp(prefix="run_all-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rfEP", "--durations=15",
           "--continue-on-collection-errors", "--suite-report=" + report]
    if fast:
        cmd += ["-m", FAST]
    if jobs > 1 and len(names) > 1:
        cmd += ["-n", str(jobs), "--dist", "loadgroup"]
    cmd += list(extra) + [os.path.join(HERE, n + ".py") for n in names]
    started = time.monotonic()
    rc, _, timed_out = run_streaming(cmd, env, timeout, "pytest")
    took = time.monotonic() - started
    try:
        with open(report) as f:
            counts = json.load(f)  # written at the end of pytest's session
        reported = True
    except (OSError, ValueError):
        counts, reported = {}, False  # pytest missing, or stopped before its end
    finally:
        os.unlink(report)
    results = []
    for name in names:
        c = counts.get(name)
        if c is None:
            # Nothing reported: deselected throughout (--fast), or pytest never got to it.
            if fast and reported and rc in (0, 1, 5) and not timed_out:
                results.append((name, 0, 0, "no case in this tier"))
            else:
                results.append((name, 0, 1, "no result (pytest %s)" % ("timed out" if timed_out else describe_rc(rc))))
            continue
        results.append((name, c["passed"], c["failed"], "%.1fs in its cases" % c["seconds"]))
    if rc not in (0, 1, 5) or timed_out:  # 5: nothing collected (a tier without cases)
        results.append(("pytest", 0, 1, "timed out" if timed_out else describe_rc(rc)))
    return results, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="build directory holding sockmapd and unit_tests")
    ap.add_argument("--only", action="append", default=[],
                    help="suite names to run (unit, bb_core, ...); comma-separated or repeated")
    ap.add_argument("--skip", action="append", default=[],
                    help="suite names not to run; comma-separated or repeated")
    ap.add_argument("--fast", action="store_true",
                    help="leave out the cases marked root, container or slow (make check-fast)")
    ap.add_argument("--jobs", "-j", type=int, default=None,
                    help="pytest-xdist workers for the black-box suites (default 2, with --fast 4; env CHECK_JOBS;"
                         " 1: one process)")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("SUITE_TIMEOUT", "1200")),
                    help="seconds per suite: the black-box run may take this times the number of suites"
                         " (default 1200, env SUITE_TIMEOUT)")
    ap.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest (-k NAME, -x, ...)")
    args = ap.parse_args()
    if args.jobs is None:
        # The quick cases mostly wait (a server's start, a timeout): four of them side by side cost
        # two cores little, and took a quarter less wall time than two on a loaded machine.
        args.jobs = int(os.environ.get("CHECK_JOBS") or (4 if args.fast else 2))

    build = os.path.abspath(args.build)
    only = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
    only = {n[:-3] if n.endswith(".py") else n for n in only}
    skip = {n.strip() for item in args.skip for n in item.split(",") if n.strip()}
    skip = {n[:-3] if n.endswith(".py") else n for n in skip}
    env = dict(os.environ)
    env["SOCKMAPD"] = os.path.join(build, "sockmapd")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"

    suites = ["unit"] + [os.path.basename(p)[:-3] for p in sorted(glob.glob(os.path.join(HERE, "bb_*.py")))]
    results = []
    if only:
        for name in sorted(only - set(suites)):
            results.append((name, 0, 1, "no such suite"))
        suites = [s for s in suites if s in only]
    for name in sorted(skip - set(suites) - only):
        results.append((name, 0, 1, "--skip: no such suite"))
    skipped = [s for s in suites if s in skip]
    suites = [s for s in suites if s not in skip]

    started = time.monotonic()
    blackbox = [s for s in suites if s != "unit"]
    unit = []

    def unit_tests(echo):
        t0 = time.monotonic()
        p, f, note = run_unit(build, env, args.timeout, echo)
        unit.append(("unit", p, f, "%s, %.1fs" % (note, time.monotonic() - t0)))

    # The unit tests mostly wait (timeouts, idle limits): beside the black-box suites they cost
    # next to no wall time.  Their output follows when they are done.
    beside = None
    if "unit" in suites:
        if blackbox:
            beside = threading.Thread(target=unit_tests, args=(False,))
            beside.start()
        else:
            print("=== unit", flush=True)
            unit_tests(True)
    took = None
    bb = []
    if blackbox:
        print("=== %s" % ", ".join(blackbox), flush=True)
        bb, took = run_blackbox(blackbox, env, args.timeout * len(blackbox), args.jobs, args.fast, args.pytest_args)
    if beside is not None:
        beside.join()
    results += unit + bb

    total_p = sum(r[1] for r in results)
    total_f = sum(r[2] for r in results)
    print("")
    print("=== summary (%s%s): %.0fs%s" % (build, ", fast tier" if args.fast else "", time.monotonic() - started,
                                         "" if took is None else ", black-box %.0fs on %d worker(s)"
                                         % (took, args.jobs if len(blackbox) > 1 else 1)))
    width = max([len(r[0]) for r in results] + [5])
    empty = [r[0] for r in results if r[3] == "no case in this tier"]
    for name, p, f, note in results:
        if name not in empty:
            print("%-*s  %4d passed, %3d failed   %s%s" % (width, name, p, f, "FAILED  " if f else "", note))
    if empty:
        print("no case in this tier: %s" % ", ".join(empty))
    if skipped:
        print("skipped on request: %s" % ", ".join(skipped))
    print("%d passed, %d failed" % (total_p, total_f), flush=True)
    return 1 if total_f else 0


if __name__ == "__main__":
    sys.exit(main())
