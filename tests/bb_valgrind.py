#!/usr/bin/python3
"""bb_valgrind — memory errors and leaks in real sessions: valgrind memcheck (or LeakSanitizer).

Runs sockmapd under `valgrind --leak-check=full --error-exitcode=99
--errors-for-leak-kinds=definite,indirect` on pipe sessions with found,
not-found, TEMP (failing query, unreachable and silent hosts), PERM, large
and too-large results, a second schema, an idle database connection closed
and reopened, and a framing error; also --check-config and --query.  No
errors and no definite or indirect leaks are allowed; the summaries are
printed.  A binary built with AddressSanitizer cannot run under valgrind:
then the same sessions run with LeakSanitizer (ASAN_OPTIONS detect_leaks=1)
as the checker instead.
Run: SOCKMAPD=build/sockmapd tests/bb_valgrind.py [test-name-or-glob ...]
"""

import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

pytestmark = pytest.mark.slow  # sockmapd under valgrind

BROKEN_MAP = {"service": "broken", "database": "dbmail", "table": "no_such_table", "key": "k", "value": "v"}


SANITIZED = sanitized()


class Checked:
    """A checker run: argv prefix and environment, then verdict() on its report."""

    def __init__(self, label):
        self.label = label
        # No spaces or colons: the path goes into ASAN_OPTIONS.
        self.report = tmpfile("memcheck-" + re.sub(r"[^A-Za-z0-9_-]", "-", label), content=b"")
        if SANITIZED:
            self.prefix = []
            self.env = {"ASAN_OPTIONS": "detect_leaks=1:exitcode=99:log_path=" + self.report,
                        "LSAN_OPTIONS": "exitcode=99"}
        else:
            self.prefix = [require_tool("valgrind"), "--tool=memcheck", "--leak-check=full",
                           "--error-exitcode=99", "--errors-for-leak-kinds=definite,indirect",
                           "--show-leak-kinds=definite,indirect", "--track-origins=yes",
                           "--child-silent-after-fork=yes", "--log-file=" + self.report]
            self.env = {}

    def text(self):
        out = []
        d = os.path.dirname(self.report)
        base = os.path.basename(self.report)
        for name in sorted(os.listdir(d)):
            if name.startswith(base):  # ASan's log_path appends .PID
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def verdict(self, rc):
        text = self.text()
        if SANITIZED:
            ok("ERROR: " not in text, "%s: sanitizer report:\n%s" % (self.label, text[-4000:]))
            ne(rc, 99, "%s: sanitizer exit status" % self.label)
            print("    %-28s LeakSanitizer/ASan: clean (exit %d)" % (self.label, rc))
            return
        ne(rc, 99, "%s: valgrind found errors or leaks:\n%s" % (self.label, text[-6000:]))
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        ok(m, "%s: no valgrind summary in its log:\n%s" % (self.label, text[-2000:]))
        eq(m.group(1), "0", "%s: valgrind errors:\n%s" % (self.label, text[-6000:]))
        definite = re.search(r"definitely lost: ([\d,]+) bytes", text)
        indirect = re.search(r"indirectly lost: ([\d,]+) bytes", text)
        for what, mm in (("definitely", definite), ("indirectly", indirect)):
            if mm:
                eq(mm.group(1), "0", "%s: %s lost" % (self.label, what))
        heap = re.search(r"total heap usage: ([\d,]+) allocs, ([\d,]+) frees, ([\d,]+) bytes allocated", text)
        still = re.search(r"still reachable: ([\d,]+) bytes in ([\d,]+) blocks", text)
        print("    %-28s valgrind: 0 errors, definitely lost %s, indirectly lost %s, still reachable %s; heap %s"
              % (self.label, definite.group(1) if definite else "0", indirect.group(1) if indirect else "0",
                 still.group(1) if still else "0",
                 "%s allocs / %s frees / %s bytes" % heap.groups() if heap else "?"), flush=True)


def config(hosts, **database):
    db = {"connect_timeout": 1, "read_timeout": 5, "write_timeout": 5, "db_idle_timeout": 1, "retry_interval": 30}
    db.update(database)
    return temp_config(base_config(hosts, sysconfig={"loglevel": "debug", "idle_timeout": 60},
                                   database=db, extra_maps=[BROKEN_MAP]))


def session(label, cfg, steps, timeout=60):
    """Run `steps` [(payload bytes | float seconds to sleep, expected status word or None)] in one pipe session."""
    chk = Checked(label)
    s = PipeSession(cfg, prefix=chk.prefix, env=chk.env, timeout=timeout)
    for item, want in steps:
        if isinstance(item, float):
            time.sleep(item)
            continue
        s.send_raw(item)
        if want is None:
            continue
        reply = s.read_reply(timeout)
        eq(status_word(reply), want, "%s: reply to %r (%r)" % (label, item[:60], reply[:80]))
    rc = s.close(timeout=timeout)
    chk.verdict(rc)
    return rc


@test(timeout=180)
def memcheck_session_with_lookups_failover_and_idle_reconnect():
    db = shared_mariadb()
    fake = FakeDbHost()
    reset_runtime_dir()
    cfg = config(["127.0.0.1:%d" % closed_port(), fake.host_entry, db])
    E = encode
    steps = [
        (E("recipient team@example.org"), b"OK"),         # failover past a refused and a silent host
        (E("recipient nobody@example.org"), b"NOTFOUND"),
        (E("exists Bob.Smith@example.org"), b"OK"),
        (E("sender spammer@bad.example"), b"OK"),
        (E("awkward nul\0byte"), b"OK"),
        (E("awkward max-ok"), b"OK"),                      # 100000-byte reply: buffers grow
        (E("awkward max-over"), b"PERM"),                  # too long
        (E("awkward big"), b"PERM"),
        (E("othermap ping"), b"OK"),                       # a second schema, a second connection
        (E("broken somekey"), b"TEMP"),                    # the query fails
        (E("broken again"), b"TEMP"),
        (E("nosuch key"), b"PERM"),
        (E("nospace"), b"PERM"),
        (1.6, None),                                       # db_idle_timeout 1: connections closed
        (E("recipient postmaster@example.org"), b"OK"),    # and opened again
        (E("transport example.org") * 50, None),
    ]
    steps += [(b"", b"OK")] * 49 + [(b"", b"OK")]
    steps += [(b"01:x,", b"PERM")]                         # framing error: PERM, then the end
    session("lookups", cfg, steps, timeout=60)


@test(timeout=120)
def memcheck_session_with_every_host_down():
    reset_runtime_dir()
    cfg = config(["127.0.0.1:%d" % closed_port(), "127.0.0.1:%d" % closed_port()])
    steps = [(encode("recipient team@example.org"), b"TEMP"), (encode("othermap ping"), b"TEMP"),
             (encode("recipient x@example.org"), b"TEMP"), (encode("nosuch k"), b"PERM")]
    session("all hosts down", cfg, steps)


@test(timeout=120)
def memcheck_check_config_and_query():
    db = shared_mariadb()
    reset_runtime_dir()
    good = temp_config(base_config(db))
    for label, cfg, args, want in (
            ("--check-config", good, ["--check-config"], 0),
            ("--check-config failing", config([db]), ["--check-config"], 78),
            ("--query found", good, ["--query", "recipient", "team@example.org"], 0),
            ("--query not found", good, ["--query", "recipient", "nobody@example.org"], 1),
            ("--query down", temp_config(base_config(None, database={"connect_timeout": 1})),
             ["--query", "recipient", "team@example.org"], 75)):
        chk = Checked(label.strip("-"))
        s = PipeSession(cfg, args=args, prefix=chk.prefix, env=chk.env, timeout=60)
        rc = s.close(timeout=60)
        eq(rc, want, "%s exit status (%s)" % (label, s.stderr_text()[-500:]))
        chk.verdict(rc)


@test(timeout=120)
def memcheck_broken_config_session():
    cfg = temp_config('{"postmaps": [{"service": "recipient", "tabel": "x"}]}')
    chk = Checked("broken config")
    s = PipeSession(cfg, prefix=chk.prefix, env=chk.env, timeout=60)
    eq(status_word(s.ask("recipient", "a@b")), b"TEMP")
    rc = s.close(timeout=60)
    eq(rc, 78, "exit status")
    chk.verdict(rc)


if __name__ == "__main__":
    main()
