#!/usr/bin/python3
"""systemd_bench — what the shipped sockmapd@.service costs per connection under a real systemd.

    bench/systemd_bench.py [--rounds 5] [--connections 40] [--markdown FILE] [--json FILE]

Boots the system suite's container (tests/bb_system.py: Debian 12 under
systemd-nspawn -b, the .deb built from the tree installed with apt, MariaDB
with the example tables, the README's quick start with the password in the
config), then adds socket/service pairs on their own loopback ports:

  shipped   the installed sockmapd@.service as it is (under a socket of its own)
  plain     the same binary with only ExecStart, User, Group, StandardInput,
            RuntimeDirectory (no sandbox, no limits, no credentials)
  +OPTION   plain plus one group of settings of the shipped unit (each key,
            e.g. all SystemCallFilter= lines together)
  -OPTION   shipped minus that group
  NAME      a service file given with --candidate NAME=FILE
  listener  the installed Accept=no pair (sockmapd-listener.socket/.service),
            copied under another name on its own port: one service that
            forks a handler per connection

and measures, from a client in the container's network namespace, the cold
first answer (connect, one lookup, reply: a new handler each time) and
sequential new connections per second, in interleaved rounds; medians of the
rounds.  Every reply is checked (OK with the expected value).

Then what a mail sees, through the container's Postfix smtpd with the
doc/postfix.md's main.cf, for each of the two installed socket units on 2224 (the
default sockmapd-listener pair, then sockmapd.socket): an SMTP session after
a pause longer than Postfix's 10 s socketmap idle limit (dict_sockmap.c,
DICT_SOCKMAP_DEF_MAX_IDLE), so smtpd and trivial-rewrite reconnect, times
MAIL FROM + RCPT TO (cold); then RSET and the same for another known
recipient in the same session, on the connections just opened (warm).  The
difference is what a new socketmap connection adds to a mail.
--pause-samples sessions per unit (each after a pause of --pause s).

Prints markdown tables; the container is stopped by its pid at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "lib"))
import bb_system  # noqa: E402
import harness  # noqa: E402

# Settings every variant keeps: how the handler runs at all.
BASE_KEYS = ("Type", "ExecStart", "User", "Group", "StandardInput", "RuntimeDirectory", "RuntimeDirectoryMode",
             "RuntimeDirectoryPreserve")
# Settings measured as one: the credential and its default when the file is missing.
SAME_GROUP = {"SetCredential": "LoadCredential"}
REQUEST = b"recipient postmaster@example.org"
REPLY = b"OK root@example.net"

# Runs in the container's network namespace: N sequential new connections,
# one lookup each; prints the per-connection seconds and the total as JSON.
CLIENT = r"""
import json, socket, sys, time
port, n, req, want = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4].encode()
frame = b"%d:%s," % (len(req), req)
expect = b"%d:%s," % (len(want), want)
times, bad = [], []
t0 = time.perf_counter()
for i in range(n):
    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(frame)
    data = b""
    while len(data) < len(expect):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    times.append(time.perf_counter() - t)
    s.close()
    if data != expect:
        bad.append(data.decode(errors="replace"))
print(json.dumps({"times": times, "total": time.perf_counter() - t0, "bad": bad[:3]}))
"""


def unit_lines(text):
    """[(key, line)] of the [Service] section, in order."""
    out, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            out.append((line.partition("=")[0].strip(), line))
    return out


def service_text(lines):
    return "[Unit]\nDescription=bench variant\n\n[Service]\n" + "\n".join(lines) + "\n"


def socket_text(port):
    return "[Socket]\nListenStream=127.0.0.1:%d\nAccept=yes\nMaxConnections=64\nBacklog=128\n" % port


def variants(shipped):
    lines = unit_lines(shipped)
    base = [l for k, l in lines if k in BASE_KEYS]
    groups = {}
    for k, l in lines:
        if k in BASE_KEYS:
            continue
        groups.setdefault(SAME_GROUP.get(k, k), []).append(l)
    groups = list(groups.items())
    out = [("shipped", [l for _, l in lines]), ("plain", base)]
    for key, ls in groups:
        out.append(("+" + key, base + ls))
    for key, ls in groups:
        out.append(("-" + key, [l for _, l in lines if l not in ls]))
    return out


def measure(c, port, n):
    r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", CLIENT, str(port), str(n),
                        REQUEST.decode(), REPLY.decode()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("client on port %d: %s" % (port, r.stderr.decode()[-800:]))
    res = json.loads(r.stdout)
    if res["bad"]:
        raise RuntimeError("port %d: wrong replies %r" % (port, res["bad"]))
    return res


# Runs in the container's network namespace: one SMTP session, MAIL FROM and
# RCPT TO timed (cold), RSET, the same for another recipient (warm).
SMTP_TIMED = r"""
import json, smtplib, sys, time
s = smtplib.SMTP("127.0.0.1", 25, timeout=60)
s.ehlo("bench.example.com")
out = {}
for label, rcpt in (("cold", sys.argv[1]), ("warm", sys.argv[2])):
    t = time.perf_counter()
    c1 = s.mail("someone@example.com")[0]
    c2 = s.rcpt(rcpt)[0]
    out[label] = time.perf_counter() - t
    out[label + "_codes"] = [c1, c2]
    s.rset()
s.quit()
print(json.dumps(out))
"""


def smtp_timed(c, cold_rcpt, warm_rcpt):
    r = subprocess.run(["nsenter", "-t", str(c.leader), "-n", sys.executable, "-c", SMTP_TIMED, cold_rcpt,
                        warm_rcpt], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("smtp client: " + r.stderr.decode()[-800:])
    res = json.loads(r.stdout)
    for label in ("cold", "warm"):
        if res[label + "_codes"] != [250, 250]:
            raise RuntimeError("smtp %s: %r" % (label, res))
    return res


def postfix_pause_cost(c, samples, pause):
    """Per installed unit: MAIL+RCPT after a pause (new socketmap connections) against a warm one."""
    for setting in bb_system.readme_main_cf():
        c.run(["postconf", "-e", setting])
    c.run(["systemctl", "restart", "postfix.service"], timeout=120)
    harness.wait_for(lambda: c.run("postfix status", check=False).rc == 0, timeout=30, msg="postfix running")
    rows = []
    for unit in ("sockmapd-listener.service", "sockmapd@.service"):
        if unit == "sockmapd@.service":
            bb_system.use_accept_socket(c)
        smtp_timed(c, "postmaster@example.org", "info@example.org")  # Postfix's own processes started
        cold, warm = [], []
        for i in range(samples):
            time.sleep(pause)
            res = smtp_timed(c, "postmaster@example.org", "info@example.org")
            cold.append(res["cold"] * 1000)
            warm.append(res["warm"] * 1000)
            print("%s: pause sample %d: cold %.1f ms, warm %.1f ms" % (unit, i + 1, cold[-1], warm[-1]),
                  file=sys.stderr, flush=True)
        rows.append({"unit": unit, "cold_ms": statistics.median(cold), "warm_ms": statistics.median(warm),
                     "added_ms": statistics.median([a - b for a, b in zip(cold, warm)]),
                     "cold_max_ms": max(cold), "samples": samples, "pause_s": pause})
    return rows


def exposure(c, unit):
    r = c.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
    for line in r.out.splitlines():
        if line.startswith("→ Overall exposure level") or "Overall exposure level" in line:
            return float(line.split(":")[1].split()[0])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=40)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=FILE",
                    help="also measure this service file (@SBINDIR@ -> /usr/sbin) as variant NAME")
    ap.add_argument("--no-listener", action="store_true", help="leave out the Accept=no pair")
    ap.add_argument("--pause-samples", type=int, default=5, help="SMTP sessions after a pause, per unit (0: none)")
    ap.add_argument("--pause", type=float, default=11.0, help="seconds of pause (Postfix closes after 10)")
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()

    c = bb_system.installed("bench")
    try:
        bb_system.configure(c, "config")
        shipped = c.read("/lib/systemd/system/sockmapd@.service")
        todo = variants(shipped)
        for cand in args.candidate:
            name, _, path = cand.partition("=")
            with open(path) as f:
                todo.append((name, [l for _, l in unit_lines(f.read().replace("@SBINDIR@", "/usr/sbin"))]))
        if args.only:
            keep = set(args.only.split(",")) | {c.partition("=")[0] for c in args.candidate}
            todo = [v for v in todo if v[0] in keep or v[0] in ("shipped", "plain")]
        ports = {}
        for i, (name, lines) in enumerate(todo):
            ports[name] = 2300 + i
            unit = "smb%d" % i
            c.write("/etc/systemd/system/%s.socket" % unit, socket_text(ports[name]))
            c.write("/etc/systemd/system/%s@.service" % unit, service_text(lines))
        if not args.no_listener:
            # A copy, so that its Conflicts=sockmapd.socket leaves "shipped" running.
            sock = c.read("/lib/systemd/system/sockmapd-listener.socket")
            svc = c.read("/lib/systemd/system/sockmapd-listener.service")
            sock = sock.replace("Conflicts=sockmapd.socket", "").replace("ListenStream=127.0.0.1:2224",
                                                                          "ListenStream=127.0.0.1:2299")
            c.write("/etc/systemd/system/smblistener.socket", sock)
            c.write("/etc/systemd/system/smblistener.service", svc.replace("sockmapd-listener.socket",
                                                                           "smblistener.socket"))
            ports["listener"] = 2299
        c.run(["systemctl", "daemon-reload"])
        for i, (name, lines) in enumerate(todo):
            c.run(["systemctl", "start", "smb%d.socket" % i])
        if "listener" in ports:
            c.run(["systemctl", "start", "smblistener.socket"])
        units = {name: "smb%d@x.service" % i for i, (name, lines) in enumerate(todo)}
        units["listener"] = "smblistener.service"
        for name in ports:  # warm-up: page cache, the database's buffer pool
            measure(c, ports[name], 3)
        rounds = {name: [] for name in ports}
        for rnd in range(args.rounds):
            for name in ports:
                rounds[name].append(measure(c, ports[name], args.connections))
            print("round %d done" % (rnd + 1), file=sys.stderr, flush=True)
        rows = []
        for name in ports:
            p50s = [statistics.median(r["times"]) * 1000 for r in rounds[name]]
            p90s = [sorted(r["times"])[int(0.9 * (len(r["times"]) - 1))] * 1000 for r in rounds[name]]
            rates = [len(r["times"]) / r["total"] for r in rounds[name]]
            rows.append({"variant": name, "p50_ms": statistics.median(p50s), "p90_ms": statistics.median(p90s),
                         "conn_per_s": statistics.median(rates), "exposure": exposure(c, units[name])})
        c.run(["systemctl", "stop", "smb*.socket", "smb*.service"], check=False)  # the variants' sockets off
        pause_rows = postfix_pause_cost(c, args.pause_samples, args.pause) if args.pause_samples else []
        failed = c.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"], check=False).out.strip()
        if failed:
            raise RuntimeError("failed units after the bench: " + failed)
    finally:
        c.stop()

    plain = next(r for r in rows if r["variant"] == "plain")
    lines = ["| unit | cold first answer p50 ms | p90 ms | new connections/s | vs plain p50 | exposure |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.1f | %.1f | %.0f | %+.1f ms | %s |" % (
            r["variant"], r["p50_ms"], r["p90_ms"], r["conn_per_s"], r["p50_ms"] - plain["p50_ms"],
            "%.1f" % r["exposure"] if r["exposure"] is not None else "-"))
    if pause_rows:
        lines += ["", "| unit on 2224 | MAIL+RCPT after a %.0f s pause p50 ms | warm p50 ms | added by the new "
                  "connections p50 ms | after a pause, max ms |" % pause_rows[0]["pause_s"],
                  "|---|---:|---:|---:|---:|"]
        for r in pause_rows:
            lines.append("| %s | %.1f | %.1f | %+.1f | %.1f |" % (r["unit"], r["cold_ms"], r["warm_ms"],
                                                                  r["added_ms"], r["cold_max_ms"]))
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "connections": args.connections, "rows": rows,
                       "postfix_pause": pause_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        harness._at_exit()
