#!/usr/bin/python3
"""bb_docs — the man pages and the README say what the program does.

Facts stated in more than one place are compared with their one source:
- every option `sockmapd --help` lists, with its default, is in sockmapd(8)'s
  OPTIONS; every exit status --help names is in EXIT STATUS;
- every signal the accept loop handles (src/listen.cc) is in SIGNALS;
- every unit and file under units/ is named in FILES;
- every default of the config structs (src/config.hh) is the one
  sockmapd.json(5) gives, and sockmapd(8)'s "sysconfig.KEY (default V)" too;
- every shell block of the README's "Try it from a shell" runs as written
  against config.example.json and config.example.sql loaded into a
  throwaway MariaDB, printing what the README shows (pids and times
  normalised);
- every command sockmapd(8)'s EXAMPLES show stands in the README;
- every README section that shows a command with its output is run as
  written by a named test (here: "Try it from a shell", "Test with postmap"
  and the "Postfix examples" with their SQL and maps).
Run: SOCKMAPD=build/sockmapd tests/bb_docs.py [test-name-or-glob ...]
"""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

import readme  # noqa: E402

README = os.path.join(REPO, "README.md")
MAN8 = os.path.join(REPO, "doc", "sockmapd.8")
MAN5 = os.path.join(REPO, "doc", "sockmapd.json.5")
CONFIG_HH = os.path.join(REPO, "src", "config.hh")


def read(path):
    with open(path) as f:
        return f.read()


def man_section(path, title):
    """The text of a man page's .SH section `title` (quotes optional)."""
    text = read(path)
    m = re.search(r'^\.SH "?%s"?\s*$' % re.escape(title), text, re.M)
    ok(m, "%s has a section %s" % (os.path.basename(path), title))
    end = re.search(r"^\.SH ", text[m.end():], re.M)
    return text[m.end():m.end() + end.start() if end else len(text)]


def roff(s):
    """How a literal appears in roff source: '-' escaped."""
    return s.replace("-", "\\-")


def unroff(s):
    return (s.replace("\\-", "-").replace("\\(dq", '"').replace("\\fB", "").replace("\\fR", "")
            .replace("\\fI", "").replace("\\fP", "").replace("\\&", ""))


def help_text():
    r = subprocess.run([sockmapd_path(), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    eq(r.returncode, 0, "--help exits 0")
    return r.stdout.decode()


def help_options():
    """{option: default or None} from --help's Options list."""
    opts = {}
    text = help_text()
    body = text.split("Options:", 1)[1].split("\n\n", 1)[0]
    for line in body.splitlines():
        m = re.match(r"^\s+((?:-{1,2}[\w-]+,?)+)(?:\s+\S.*)?$", line)
        if not m:
            continue
        default = re.search(r"\(default: ([^)]*)\)", line)
        for name in m.group(1).split(","):
            if name:
                opts[name] = default.group(1) if default else None
    return opts


# ---------------------------------------------------------------- sockmapd(8) and --help

@test
def every_option_and_default_of_help_is_in_the_man_page():
    opts = help_options()
    ok(len(opts) >= 10, "options found in --help: %r" % opts)
    section = man_section(MAN8, "OPTIONS")
    # Each .TP entry: its tag line and its text, unescaped.
    entries = [unroff(e) for e in re.split(r"^\.TP\s*$", section, flags=re.M)[1:]]
    missing, wrong_default = [], []
    for name, default in sorted(opts.items()):
        entry = [e for e in entries if re.search(r"(^|[\s,\"])%s([\s,\"]|$)" % re.escape(name), e.split("\n", 2)[1])]
        if not entry:
            missing.append(name)
            continue
        if default is not None and default.split(" ")[0].rstrip(",.") not in entry[0]:
            wrong_default.append("%s: --help says default %s" % (name, default))
    eq(missing, [], "options of --help without an entry in sockmapd(8) OPTIONS")
    eq(wrong_default, [], "defaults of --help that sockmapd(8) does not give")


@test
def every_exit_status_of_help_is_in_the_man_page():
    footer = help_text().split("Exit status:", 1)[1]
    codes = sorted(set(int(c) for c in re.findall(r"\b(\d+) [a-zA-Z(]", footer)))
    ok(set(codes) >= {0, 64, 75, 78}, "exit statuses found in --help: %r" % codes)
    section = unroff(man_section(MAN8, "EXIT STATUS"))
    eq([c for c in codes if not re.search(r"(^|\s|\.B )%d\b" % c, section, re.M)], [],
       "exit statuses of --help missing in sockmapd(8) EXIT STATUS")


@test
def every_handled_signal_is_in_the_man_page():
    src = read(os.path.join(REPO, "src", "listen.cc"))
    m = re.search(r"handled_signals\[\]\s*=\s*\{([^}]*)\}", src)
    ok(m, "listen.cc names the signals it handles")
    signals = [s.strip() for s in m.group(1).split(",") if s.strip() and s.strip() != "SIGCHLD"]
    ok(len(signals) >= 3, "signals: %r" % signals)
    section = unroff(man_section(MAN8, "SIGNALS"))
    eq([s for s in signals if s not in section], [], "signals handled but missing in sockmapd(8) SIGNALS")


@test
def every_shipped_unit_is_in_the_man_page():
    files = unroff(man_section(MAN8, "FILES"))
    units = sorted(os.listdir(os.path.join(REPO, "units")))
    ok(len(units) >= 4, "units: %r" % units)
    eq([u for u in units if u not in files and u.replace(".xinetd", "") not in files], [],
       "files of units/ not named in sockmapd(8) FILES")


# ---------------------------------------------------------------- defaults: config.hh is the source

def struct_defaults():
    """{(struct, field): default as text} from src/config.hh's member initialisers."""
    text = read(CONFIG_HH)
    out = {}
    for m in re.finditer(r"^struct (\w+) \{(.*?)^\};", text, re.M | re.S):
        for f in re.finditer(r"^\s+[\w:<>, ]+?\s(\w+)\s*=\s*([^;]+);", m.group(2), re.M):
            value = f.group(2).strip()
            if value.startswith("std::chrono"):
                value = re.sub(r"\D", "", value)
            value = re.sub(r"^[A-Z]\w*::", "", value).lower().strip('"')  # LogLevel::Info, SearchOrder::Exact
            out[(m.group(1), f.group(1))] = value
        for f in re.finditer(r"^\s+std::(?:string|vector<[^>]*>)\s+(\w+);", m.group(2), re.M):
            out[(m.group(1), f.group(1))] = ""
    return out


SECTION_STRUCT = {"SYSCONFIG": "SysConfig", "DATABASE": "DatabaseConfig", "POSTMAPS": "MapConfig"}


def man5_defaults():
    """{(struct, key): default as text} from sockmapd.json(5)'s '.BR key " (default X)"' tags."""
    out = {}
    for title, struct in SECTION_STRUCT.items():
        for m in re.finditer(r"^\.BR? (.*)\(\w*,? ?defaults? ([^)]*)\)\"?\s*$", man_section(MAN5, title), re.M):
            keys = [k for k in re.findall(r"(\w+)", m.group(1))]
            values = [v.strip() for v in unroff(m.group(2)).split(",")]
            if len(values) == 1:
                values = values * len(keys)
            for k, v in zip(keys, values):
                v = v.strip('"')
                out[("TlsConfig" if k == "verify_server" else struct, k)] = "" if v == "empty" else v.lower()
    return out


@test
def config_defaults_in_the_man_pages_are_the_programs():
    code, man = struct_defaults(), man5_defaults()
    ok(len(man) >= 12, "defaults found in sockmapd.json(5): %r" % man)
    wrong = ["%s.%s: sockmapd.json(5) says %r, src/config.hh %r" % (s, k, v, code.get((s, k)))
             for (s, k), v in sorted(man.items()) if (s, k) in code and code[(s, k)] != v]
    eq(wrong, [], "defaults that differ")
    eq([k for k in man if k not in code], [], "documented defaults of keys config.hh does not have")
    # sockmapd(8) names some sysconfig defaults in passing.
    text = read(MAN8)
    said = re.findall(r"^\.BR? sysconfig\.(\w+)\s*\n\(default ([^)]*)\)", text, re.M)
    ok(said, "sockmapd(8) names sysconfig defaults")
    eq(["sysconfig.%s: sockmapd(8) says %s" % (k, v) for k, v in said if code.get(("SysConfig", k)) != v.split(",")[0].strip()], [],
       "sockmapd(8)'s sysconfig defaults")


# ---------------------------------------------------------------- the README's commands

# Every README section with a shell block that shows a command's output
# ("$ " lines followed by what they print), and the test that runs its
# blocks as written.  A section added without one fails below.
SHELL_SECTIONS = {
    "Try it from a shell": "bb_docs try_it_from_a_shell",
    "Postfix": "bb_docs postfix_test_with_postmap",
    "Map features: query templates, key handling, result formats": "bb_docs map_feature_examples_as_written",
    "Moving from the Go sockmapd": "bb_guide moving_*",
    "Troubleshooting": "bb_guide troubleshooting_*",
    "The MTA in a DMZ": "bb_guide dmz_*",
}


def shows_output(body):
    lines = body.splitlines()
    return bool(lines) and lines[0].startswith("$ ") and any(not line.startswith("$ ") for line in lines)


@test
def every_readme_command_with_output_is_run_by_a_test():
    with_output = [t for t in readme.titles() if any(lang == "sh" and shows_output(body)
                                                     for lang, body in readme.blocks(t))]
    ok("Try it from a shell" in with_output, "sections found: %r" % with_output)
    eq([t for t in with_output if t not in SHELL_SECTIONS], [],
       "README sections showing a command's output that no test runs (add one, and name it in SHELL_SECTIONS)")


def sample_database():
    """A throwaway MariaDB with config.example.sql, and config.example.json pointed at it."""
    db = MariaDB(name="sample")
    db.start()
    db.load_fixtures(os.path.join(REPO, "config.example.sql"))
    with open(os.path.join(REPO, "config.example.json")) as f:
        cfg = json.load(f)
    cfg["database"].update({"host": [db.unix_entry], "username": MariaDB.APP_USER,
                            "password": MariaDB.APP_PASSWORD})
    return db, temp_config(cfg)


@test
def try_it_from_a_shell():
    """The section's blocks as written: the first against config.example.json alone, the rest with the sample data."""
    blocks = readme.blocks("Try it from a shell")
    ok(len(blocks) >= 2, "blocks: %r" % blocks)
    readme.run_shell(blocks[0])
    _, cfg = sample_database()
    for b in blocks[1:]:
        readme.run_shell(b, cfg=cfg)


@test
def man_page_commands_are_the_readmes():
    """Each command sockmapd(8)'s EXAMPLES show stands in the README too, where a test runs it."""
    text = unroff(man_section(MAN8, "EXAMPLES"))
    commands = [line.strip() for block in re.findall(r"^\.nf\n(.*?)^\.fi", text, re.M | re.S)
                for line in block.splitlines()
                if re.match(r"\s*(sockmapd|systemctl|postmap|printf)\b", line)]
    ok(len(commands) >= 3, "commands in EXAMPLES: %r" % commands)
    with open(readme.README) as f:
        text = f.read()
    eq([c for c in commands if c not in text], [], "sockmapd(8) EXAMPLES commands the README does not show")


@test(timeout=120)
def postfix_test_with_postmap():
    """The README's "Test with postmap" block as written, against config.example.sql through Postfix's postmap."""
    shell = [b for b in readme.fenced(readme.section("Postfix")) if b[0] == "sh"]
    eq(len(shell), 1, "one shell block in the Postfix section")
    _, cfg = sample_database()
    with SocketActivated(["-c", cfg]) as sa:
        readme.run_shell(shell[0], port=sa.port, pdir=postfix_dir())


@test(timeout=180)
def map_feature_examples_as_written():
    """Each "Postfix examples" subsection: its SQL in a fresh database, its map, its main.cf line, its postmap lines."""
    examples = readme.subsections("Map features: query templates, key handling, result formats")
    ok(len(examples) >= 3, "examples: %r" % list(examples))
    db = MariaDB(name="examples")
    db.start()
    pdir = postfix_dir()
    for title, text in examples.items():
        found = readme.fenced(text)
        langs = [lang for lang, _ in found]
        for lang in ("sql", "json", "", "sh"):
            ok(lang in langs, "%s: a %r block" % (title, lang or "main.cf"))
        db.sql("DROP DATABASE IF EXISTS mail; CREATE DATABASE mail CHARACTER SET utf8mb4 "
               "COLLATE utf8mb4_general_ci; GRANT SELECT ON mail.* TO '%s'@'localhost';" % MariaDB.APP_USER)
        for lang, body in found:
            if lang == "sql":
                db.sql(body, db="mail")
        maps = [json.loads(body) for lang, body in found if lang == "json"]
        eq(len(maps), 1, "%s: one map" % title)
        maincf = [body for lang, body in found if lang == "" and "main.cf" in body]
        eq(len(maincf), 1, "%s: one main.cf block" % title)
        contains(maincf[0], "socketmap:inet:127.0.0.1:2224:%s" % maps[0]["service"], title + ": main.cf names the map")
        cfg = temp_config(base_config(db, postmaps=maps))
        with SocketActivated(["-c", cfg]) as sa:
            for block in found:
                if block[0] == "sh":
                    readme.run_shell(block, port=sa.port, pdir=pdir)


def table_figures(text):
    """The numbers in the value cells of the Markdown tables in `text` (not the first column, not "target")."""
    figures = []
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue
        if header is None:
            header = cells
            continue
        for name, cell in zip(header[1:], cells[1:]):
            if name.lower() != "target":
                figures += re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", cell.replace("\u2212", "-"))
    return figures


@test
def readme_performance_figures_come_from_the_results_file():
    """Every figure of the README's "Performance" tables stands in the dated results file the section cites."""
    sec = readme.section("Performance")
    cited = sorted(set(re.findall(r"`(bench/[\w./-]+\.md)`", sec)))
    eq(len(cited), 1, "the Performance section cites one results file: %r" % cited)
    with open(os.path.join(REPO, cited[0])) as f:
        results = f.read()
    ok(re.search(r"\b20\d\d-\d\d-\d\d\b", results), "%s gives the date of its runs" % cited[0])
    figures = sorted(set(table_figures(sec)), key=float)
    ok(len(figures) >= 20, "figures found: %r" % figures)
    eq([n for n in figures if not re.search(r"(?<![\d.])%s(?![\d])" % re.escape(n), results)], [],
       "figures of the README's Performance tables not in %s" % cited[0])


def log_shape(line):
    """A log line with what varies from run to run replaced: time, pid, port, socket path, version, duration."""
    line = re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", "TIME ", line)
    line = re.sub(r"sockmapd\[\d+\]", "sockmapd[PID]", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    line = re.sub(r"unix:\S*mysqld\.sock", "unix:SOCKET", line)
    line = re.sub(r"server \S+", "server VERSION", line)
    return re.sub(r"\b\d+ ms\b", "N ms", line)


@test(timeout=120)
def logging_example_is_what_the_program_writes():
    """The README's Logging example: the same connection at loglevel debug and at info, in a log file."""
    example = [b for lang, b in readme.blocks("Logging") if lang == "" and "sockmapd[" in b]
    eq(len(example), 1, "one log example in the Logging section")
    want = [log_shape(line) for line in example[0].splitlines()]
    db, cfg_path = sample_database()
    with open(cfg_path) as f:
        cfg = json.load(f)
    got = {}
    for level in ("debug", "info"):
        cfg["sysconfig"].update({"loglevel": level, "logfile": tmpfile("%s.log" % level, content=b"")})
        path = temp_config(cfg)
        with SocketActivated(["-c", path]) as sa:
            with sa.client() as c:
                eq(c.ask("recipient", "postmaster@example.org"), b"OK root@example.net")
                eq(c.ask("sender", "other@bad.example"), b"OK REJECT domain blacklisted")
                eq(c.ask("nosuch", "x"), b"PERM unknown map")
                c.shutdown_write()
                c.read_until_eof(scaled(5))
            wait_for(lambda: not sa.children(), timeout=scaled(10), msg="the handler ended")
        with open(cfg["sysconfig"]["logfile"]) as f:
            got[level] = [log_shape(line) for line in f.read().splitlines()]
    eq(got["debug"], want, "the README's example at debug")
    eq(got["info"], [w for w in want if " debug: " not in w], "the same at info: the lines the README names")


# Settings the README's prose names with a value that is deliberately not
# the shipped one (what a test sets), with where it says so.
NOT_SHIPPED = {("MaxConnections", "2"): "Tests: bb_sendmail at the cap"}


def shipped_settings():
    """{Setting: {values}} over the files of units/, @SBINDIR@ as installed."""
    out = {}
    for name in os.listdir(os.path.join(REPO, "units")):
        for line in read(os.path.join(REPO, "units", name)).splitlines():
            m = re.match(r"^([A-Z]\w+)=(.*)$", line.strip())
            if m:
                out.setdefault(m.group(1), set()).add(m.group(2).replace("@SBINDIR@", "/usr/sbin"))
    return out


@test
def readme_unit_settings_are_the_shipped_ones():
    """Every `Setting=value` the README's prose states, for a setting the units have, is a value they ship."""
    units = shipped_settings()
    prose = re.sub(r"^( *)```.*?^\1```$", "", read(readme.README), flags=re.M | re.S)
    said = [(k, v) for k, v in re.findall(r"`([A-Z]\w+)=([^`]+)`", prose) if k in units]
    ok(len(said) >= 5, "settings with values in the README: %r" % said)
    eq(sorted(set("%s=%s (units: %s)" % (k, v, sorted(units[k])) for k, v in said
                  if v not in units[k] and (k, v) not in NOT_SHIPPED)), [],
       "README settings that no shipped unit has")
    # The exposure the README gives the shipped units is the bound the
    # booted system suite measures them against.
    bound = re.search(r"ok\(score <= (\d+\.\d+)", read(os.path.join(REPO, "tests", "bb_system.py")))
    ok(bound, "bb_system checks the units' exposure")
    contains(prose, "exposure %s each" % bound.group(1), "the README's exposure of the shipped units")


if __name__ == "__main__":
    main()
