#!/usr/bin/python3
"""demo — real lookups through sockmapd, shown with the command lines.

    tests/demo.py --build build

Starts a throwaway MariaDB with tests/fixtures.sql, writes a config, and
asks sockmapd through a shell pipe, --query, systemd-socket-activate (fd 3
and --inetd) and Postfix's own postmap (with a main.cf of its own, so a
machine without /etc/postfix/main.cf works).  Stops everything it started.
Exit status 1 if any answer differs from the expected one.
"""

import argparse
import json
import os
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

failures = []


def show_cmd(argv, stdin=None):
    line = " ".join(shlex.quote(str(a)) for a in argv)
    if stdin is not None:
        line = "printf %s | %s" % (shlex.quote(stdin.decode("latin-1").replace("%", "%%")), line)
    print("  $ " + line)


def check(label, got, expected):
    mark = "ok" if got == expected else "WRONG"
    print("    %-44s -> %-52r %s" % (label, got, mark))
    if got != expected:
        print("      expected %r" % expected)
        failures.append("%s: got %r, expected %r" % (label, got, expected))


# (map, key, expected reply): the replies from tests/fixtures.replies.json.
LOOKUPS = [(m, k, h.fixture_reply(m, k)) for m, k in (
    ("recipient", "postmaster@example.org"),
    ("recipient", "team@example.org"),
    ("recipient", "nobody@example.org"),
    ("exists", "bob.smith@example.org"),
    ("sender", "spammer@bad.example"),
    ("transport", "example.org"),
    ("othermap", "ping"),
    ("awkward", "x' OR '1'='1"),
)]


def postmap_expected(m, k):
    """What postmap -q prints for a fixture key: ("found", value) or ("notfound", "")."""
    reply = h.fixture_reply(m, k).decode()
    return ("found", reply[3:]) if reply.startswith("OK ") else ("notfound", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    os.environ["SOCKMAPD"] = os.path.abspath(os.path.join(args.build, "sockmapd"))
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("demo took over 180s")))
    signal.alarm(180)
    binary = h.sockmapd_path()

    print("== a throwaway MariaDB with the fixture tables")
    t0 = time.monotonic()
    db = h.MariaDB()
    db.start()
    db.load_fixtures()
    print("  $ " + " ".join(db._command()))
    print("  ready in %.2fs (datadir initialised in %.2fs, server up in %.2fs), port %d"
          % (time.monotonic() - t0, db.init_seconds or 0, db.startup_seconds, db.port))

    cfg = h.base_config(db, sysconfig={"loglevel": "info"})
    cfg_path = h.temp_config(cfg)
    print("\n== config %s" % cfg_path)
    print("\n".join("  " + line for line in json.dumps(cfg, indent=2).splitlines()))

    print("\n== lookups through a shell pipe (one session, one netstring request each)")
    stream = b"".join(h.encode("%s %s" % (m, k)) for m, k, _ in LOOKUPS) + h.encode(b"nosuch key")
    show_cmd([binary, "-c", cfg_path], stream)
    rc, out, err = h.run_pipe(cfg_path, stream, timeout=30)
    print("  stdout: %r" % out[:300] + ("..." if len(out) > 300 else ""))
    got = h.decode_stream(out)
    for (m, k, want), reply in zip(LOOKUPS, got):
        check("%s %s" % (m, k), reply, want)
    unknown = got[len(LOOKUPS)] if len(got) > len(LOOKUPS) else b""
    check("nosuch key (unknown map)", unknown[:5], b"PERM ")
    check("replies", len(got), len(LOOKUPS) + 1)
    check("exit status at EOF", rc, 0)

    print("\n== one lookup from the command line")
    for m, k, want_rc in (("transport", "example.org", 0), ("recipient", "nobody@example.org", 1)):
        want = h.fixture_reply(m, k)
        argv = ["-c", cfg_path, "--query", m, k]
        show_cmd([binary] + argv)
        rc, out, err = h.run_pipe(None, b"", args=argv, timeout=30)
        check("--query %s %s" % (m, k), (out.rstrip(b"\n"), rc), (want, want_rc))

    for inetd in (False, True):
        mode = "--inetd (connection on stdin/stdout)" if inetd else "fd 3 (LISTEN_FDS=1)"
        print("\n== systemd-socket-activate, %s" % mode)
        with h.SocketActivated(["-c", cfg_path], inetd=inetd) as sa:
            show_cmd(sa.cmd)
            with sa.client(timeout=15) as c:
                print("  client connected to 127.0.0.1:%d" % sa.port)
                for m, k, want in LOOKUPS[:5]:
                    check("%s %s" % (m, k), c.ask(m, k), want)
                c.shutdown_write()
                check("bytes after the client's EOF", c.read_until_eof(10), b"")

    print("\n== Postfix's postmap as the client (socketmap:inet:...)")
    # A main.cf of the demo's own: Postfix installed with "No configuration"
    # has none in /etc/postfix, and the demo must not depend on the host's.
    pdir = h.postfix_dir()
    print("  Postfix config directory %s (a minimal main.cf)" % pdir)
    with h.SocketActivated(["-c", cfg_path]) as sa:
        for m, k in (("recipient", "postmaster@example.org"), ("sender", "spammer@bad.example"),
                     ("recipient", "nobody@example.org")):
            want = postmap_expected(m, k)
            argv = ["-q", k, "socketmap:inet:127.0.0.1:%d:%s" % (sa.port, m)]
            show_cmd([h.require_tool("postmap"), "-c", pdir] + argv)
            result = h.postmap_outcome(*h.postmap(pdir, argv))
            check("postmap -q %s (%s)" % (k, m), result, want)
    print("\n== stopping")
    db.stop()
    print("  mariadbd stopped; sockmapd handlers and systemd-socket-activate stopped")
    signal.alarm(0)
    if failures:
        print("\ndemo: %d answer(s) wrong:" % len(failures))
        for f in failures:
            print("  " + f)
        return 1
    print("\ndemo: every answer as expected")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (AssertionError, TimeoutError, OSError, h.NetstringError) as e:
        print("demo failed: %s" % e)
        sys.exit(1)
