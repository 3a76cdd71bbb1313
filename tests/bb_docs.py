#!/usr/bin/python3
"""bb_docs — the man pages, the README and the guides under doc/ say what the program does.

Facts stated in more than one place are compared with their one source:
- every option `sockmapd --help` lists, with its default, is in sockmapd(8)'s
  OPTIONS; every exit status --help names is in EXIT STATUS;
- every signal the accept loop handles (src/listen.cc) is in SIGNALS;
- every unit and file under units/ is named in FILES;
- every default of the config structs (src/config.hh) is the one
  sockmapd.json(5) gives, and sockmapd(8)'s "sysconfig.KEY (default V)" too;
- every fenced block of README.md and doc/*.md carries a marker
  (`<!-- test: NAME -->`) that a test names; the tests find blocks by file
  and marker (tests/lib/readme.py), never by section title;
- the blocks of "Try it from a shell" (doc/testing-and-benchmarks.md) run as
  written against config.example.json and config.example.sql loaded into a
  throwaway MariaDB, printing what they show (pids and times normalised);
  so do postfix.md's postmap block and its recipes with their SQL and maps;
- every command sockmapd(8)'s EXAMPLES show stands in the README or a guide;
- the README is at most 300 lines and reaches a main.cf line within 120;
- the contradictions issue 32 found stay gone: the default unit named alike
  by sockmapd(8), debian/control, debian/rules and the README; the
  credential only where a unit loads it; no guide enabling a second socket
  on the port; "without a signal" only where it is true; the examples'
  outputs from config.example.sql; port 2224 belonging to both units;
  sockmapd.json(5)'s example against its own idle_timeout advice; the
  packager's command being the build dependencies (apt-get build-dep);
- every link between the documents reaches a file and a heading.
Run: SOCKMAPD=build/sockmapd tests/bb_docs.py [test-name-or-glob ...]
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import *  # noqa: E402,F401,F403

import readme  # noqa: E402

MAN8 = os.path.join(REPO, "doc", "sockmapd.8")
MAN5 = os.path.join(REPO, "doc", "sockmapd.json.5")
CONFIG_HH = os.path.join(REPO, "src", "config.hh")
MAPCONFIG_HH = os.path.join(REPO, "src", "mapconfig.hh")


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
    """{(struct, field): default as text} from the member initialisers of
    src/config.hh and src/mapconfig.hh (a map's own keys)."""
    text = read(CONFIG_HH) + "\n" + read(MAPCONFIG_HH)
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


# ---------------------------------------------------------------- the shown blocks

def suite_sources():
    """The text of every test suite and benchmark script: where block names are named."""
    out = []
    for d in ("tests", "bench"):
        for name in sorted(os.listdir(os.path.join(REPO, d))):
            if name.endswith(".py"):
                out.append(read(os.path.join(REPO, d, name)))
    return "\n".join(out)


@test
def every_shown_block_has_a_marker_a_test_names():
    """Every fenced block of README.md and doc/*.md: a marker, and a test naming it (or its prefix, "recipe-")."""
    sources = suite_sources()
    unmarked, unnamed, count = [], [], 0
    for path in readme.DOCS:
        for name, lang, body, line in readme.all_blocks(path):
            count += 1
            if name is None:
                unmarked.append("%s:%d" % (path, line))
                continue
            prefixes = [name[:i + 1] for i, ch in enumerate(name) if ch == "-"]
            if '"%s"' % name not in sources and not any('"%s"' % p in sources for p in prefixes):
                unnamed.append("%s: %s" % (path, name))
    ok(count >= 40, "blocks found: %d" % count)
    eq(unmarked, [], "fenced blocks without a <!-- test: NAME --> marker")
    eq(unnamed, [], "markers no test names")


def sample_database():
    return readme.sample_database()


TRY = "doc/testing-and-benchmarks.md"
POSTFIX = "doc/postfix.md"


@pytest.mark.slow
@test
def try_it_from_a_shell():
    """The pipe block against config.example.json alone, the --query block with the sample data."""
    readme.run_shell(readme.block(TRY, "try-pipe"))
    _, cfg = sample_database()
    readme.run_shell(readme.block(TRY, "try-query"), cfg=cfg)


@test
def man_page_commands_are_in_the_documents():
    """Each command sockmapd(8)'s EXAMPLES show stands in the README or a guide too, where a test runs it."""
    text = unroff(man_section(MAN8, "EXAMPLES"))
    commands = [line.strip() for block in re.findall(r"^\.nf\n(.*?)^\.fi", text, re.M | re.S)
                for line in block.splitlines()
                if re.match(r"\s*(sockmapd|systemctl|postmap|printf)\b", line)]
    ok(len(commands) >= 3, "commands in EXAMPLES: %r" % commands)
    blocks = "\n".join(body for path in readme.DOCS for _, _, body, _ in readme.all_blocks(path))
    eq([c for c in commands if c not in blocks], [], "sockmapd(8) EXAMPLES commands no document shows")


@pytest.mark.slow
@test(timeout=120)
def postfix_test_with_postmap():
    """postfix.md's postmap block as written, against config.example.sql through Postfix's postmap."""
    _, cfg = sample_database()
    with SocketActivated(["-c", cfg]) as sa:
        readme.run_shell(readme.block(POSTFIX, "postfix-postmap"), port=sa.port, pdir=postfix_dir())


@pytest.mark.slow
@test(timeout=180)
def map_recipes_as_written():
    """Each recipe of postfix.md (recipe-NAME-sql, -map, -main-cf, -postmap): its SQL in a fresh database, its map,
    its main.cf line, its postmap lines."""
    recipes = {}
    for name, lang, body in readme.with_prefix(POSTFIX, "recipe-"):
        recipe, part = re.fullmatch(r"recipe-(\w+)-(sql|map|main-cf|postmap)", name).groups()
        recipes.setdefault(recipe, {})[part] = (lang, body)
    ok(len(recipes) >= 3, "recipes: %r" % list(recipes))
    db = MariaDB(name="examples")
    db.start()
    pdir = postfix_dir()
    for title, parts in recipes.items():
        eq(sorted(parts), ["main-cf", "map", "postmap", "sql"], title)
        eq([parts[p][0] for p in ("sql", "map", "main-cf", "postmap")], ["sql", "json", "", "sh"], title)
        db.sql("DROP DATABASE IF EXISTS mail; CREATE DATABASE mail CHARACTER SET utf8mb4 "
               "COLLATE utf8mb4_general_ci; GRANT SELECT ON mail.* TO '%s'@'localhost';" % MariaDB.APP_USER)
        db.sql(parts["sql"][1], db="mail")
        m = json.loads(parts["map"][1])
        contains(parts["main-cf"][1], "socketmap:inet:127.0.0.1:2224:%s" % m["service"], title + ": main.cf names the map")
        cfg = temp_config(base_config(db, postmaps=[m]))
        with SocketActivated(["-c", cfg]) as sa:
            readme.run_shell(parts["postmap"], port=sa.port, pdir=pdir)


@test
def design_synopsis_is_the_command_line():
    """doc/DESIGN.md's command-line block: every option it shows is one --help lists."""
    lang, body = readme.block("doc/DESIGN.md", "design-synopsis")
    shown = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", "\n".join(line.split("  ")[0] for line in body.splitlines())))
    ok(len(shown) >= 7, "options in the synopsis: %r" % shown)
    eq(sorted(shown - set(help_options())), [], "options of the synopsis that --help does not list")


@test
def make_targets_shown_exist():
    """The README's set-up commands name targets of the Makefile."""
    lang, body = readme.block("README.md", "setup-make")
    targets = re.findall(r"^make (\w+)", body, re.M)
    eq(targets, ["demo", "check"])
    makefile = read(os.path.join(REPO, "Makefile"))
    eq([t for t in targets if not re.search(r"^%s:" % t, makefile, re.M)], [], "targets the Makefile lacks")


# ---------------------------------------------------------------- the README's size and shape

@test
def readme_is_short_and_reaches_main_cf_early():
    text = readme.text("README.md")
    lines = text.splitlines()
    ok(len(lines) <= 300, "README.md has %d lines (at most 300)" % len(lines))
    first = [i + 1 for i, line in enumerate(lines) if re.match(r"^\w+_maps = socketmap:", line)
             or re.match(r"^virtual_alias_domains = ", line)]
    ok(first and first[0] <= 120, "the first main.cf line of the quick start is at line %r (at most 120)" % first[:1])
    # The quick start's config has exactly two maps: aliases with a catch-all, a sender blacklist.
    maps = json.loads(readme.block("README.md", "quickstart-config")[1])["postmaps"]
    eq([(m["service"], m.get("search")) for m in maps], [("recipient", "virtual"), ("sender", "access")])


def slug(heading):
    """GitHub's anchor for a heading."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return h.replace(" ", "-")


@test
def links_between_the_documents_resolve():
    """Every relative link of README.md and doc/*.md names a file that exists and, with #anchor, a heading or <a id>."""
    broken = []
    for path in readme.DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", readme.text(path)):
            if re.match(r"\w+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            full = os.path.join(REPO, dest)
            if not os.path.exists(full):
                broken.append("%s: %s (no file)" % (path, target))
                continue
            if anchor and dest.endswith(".md"):
                t = read(full)
                anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", t, re.M)} | set(re.findall(r'<a id="([^"]+)">', t))
                if anchor not in anchors:
                    broken.append("%s: %s (no such heading)" % (path, target))
    eq(broken, [], "links that lead nowhere")


# ---------------------------------------------------------------- issue 32's contradictions, each with its test

def all_prose():
    return {path: readme.prose(path) for path in readme.DOCS}


def default_socket_from_rules():
    """The socket unit debian/rules enables: dh_installsystemd for a .socket without --no-enable."""
    rules = read(os.path.join(REPO, "debian", "rules"))
    enabled = [m.group(2) for m in re.finditer(r"dh_installsystemd ([^\n]*?)(\S+\.socket)\s*$", rules, re.M)
               if "--no-enable" not in m.group(1)]
    eq(len(enabled), 1, "one socket enabled by debian/rules: %r" % enabled)
    return enabled[0]


@test
def the_default_unit_is_named_alike_everywhere():
    """1, 2: sockmapd(8), debian/control, debian/rules and the README name the same default, and no other as enabled."""
    default = default_socket_from_rules()
    eq(default, "sockmapd-listener.socket")
    service = default.replace(".socket", ".service")
    rules = read(os.path.join(REPO, "debian", "rules"))
    others = sorted(set(re.findall(r"(\S+\.socket)", rules)) - {default})
    # debian/control's description: the default "enabled", no other socket called so.
    control = " ".join(read(os.path.join(REPO, "debian", "control")).split())
    contains(control, "%s (enabled" % default)
    for other in others:
        ok(not re.search(r"%s[^.;]*\benabled" % re.escape(other), control.replace("not enabled", "")),
           "debian/control calls %s enabled" % other)
    # sockmapd(8): DESCRIPTION says the package runs the listener; no "super-server starts one per connection".
    desc = " ".join(unroff(man_section(MAN8, "DESCRIPTION")).split())
    contains(desc, "The package runs it as one service, .BR %s" % service)
    contains(desc, "%s on 127.0.0.1:2224 (enabled when the package is installed)" % default)
    for text in [desc, control] + list(all_prose().values()):
        for wrong in ("is a per-connection handler", "lean per-connection handler", "started by systemd for each connection"):
            not_contains(text, wrong)
    # The README's opening (what comes before its first section, whatever that is called) names the
    # service and its socket.
    opening = re.split(r"^## ", readme.text("README.md"), 1, flags=re.M)[0]
    contains(" ".join(opening.split()), "`%s`, started by `%s`" % (service, default))


@test
def the_credential_is_named_where_a_unit_loads_it():
    """3: sockmapd(8) FILES names as passing db-password exactly the units with LoadCredential=."""
    loading = sorted(u for u in os.listdir(os.path.join(REPO, "units"))
                     if "LoadCredential=db-password" in read(os.path.join(REPO, "units", u)))
    eq(loading, ["sockmapd-listener.service"])
    files = " ".join(unroff(man_section(MAN8, "FILES")).split())
    entry = files[files.index("/etc/sockmapd/db-password"):]
    entry = entry[:entry.index(".TP")]
    passes = entry[:entry.index("passes it in")]
    eq([u for u in os.listdir(os.path.join(REPO, "units")) if u.endswith(".service") and u in passes], loading,
       "the units sockmapd(8) says pass the credential")
    contains(entry, "read when the service starts: a new password needs a restart")
    # And the README restarts, never only reloads, after writing a password: in the quick start (the service
    # may have started, its credential empty, before the file existed) and in the rotation.
    for name in ("quickstart-check", "operate-rotate"):
        body = readme.block("README.md", name)[1]
        contains(body, "systemctl restart %s" % loading[0], name)
        not_contains(body, "reload", name)


@test
def no_guide_leaves_two_sockets_on_the_port():
    """4: a block that enables sockmapd.socket disables the listener first; the Go guide enables nothing else."""
    for path in readme.DOCS:
        for name, lang, body, line in readme.all_blocks(path):
            if "enable --now sockmapd.socket" in body:
                ok(body.index("disable --now sockmapd-listener.socket") < body.index("enable --now sockmapd.socket"),
                   "%s:%d enables sockmapd.socket beside the listener" % (path, line))
    moving = readme.prose("doc/moving-from-go.md")
    not_contains(moving, "enable `sockmapd.socket`")
    contains(moving, "Enable nothing else")
    # Both sockets listen on the one port.
    for unit in ("sockmapd.socket", "sockmapd-listener.socket"):
        contains(read(os.path.join(REPO, "units", unit)), "ListenStream=127.0.0.1:2224")


@test
def without_a_signal_only_where_it_is_true():
    """5: an edited config applies "without a signal" only under sockmapd.socket or xinetd; the listener reloads."""
    for path, text in all_prose().items():
        for sentence in re.split(r"(?<=[.:;])\s", text):
            if "without a signal" in sentence:
                ok("sockmapd.socket" in sentence or "xinetd" in sentence,
                   "%s: %r says so for the default listener too" % (path, sentence))
    contains(readme.prose("doc/moving-from-go.md"), "`systemctl reload sockmapd-listener.service` after an edit")


@test
def shown_outputs_come_from_the_example_tables():
    """6: shown answers are config.example.sql's (root@example.net), never tests/fixtures.sql's (root@example.org)."""
    example = read(os.path.join(REPO, "config.example.sql"))
    contains(example, "('postmaster@example.org', 'root@example.net')")
    for path in readme.DOCS + ["doc/sockmapd.8", "doc/sockmapd.json.5"]:
        not_contains(readme.text(path), "root@example.org", path)


@test
def the_port_belongs_to_both_units_and_defaults_agree():
    """7: 2224 is not "the port of sockmapd.socket"; a unix socket is not "the default"; sockmapd.json(5)'s example
    keeps idle_timeout at or above the default its Sendmail advice needs."""
    for path, text in all_prose().items():
        not_contains(text, "the port of `sockmapd.socket`", path)
        not_contains(text, "or a unix socket (the default)", path)
    example = json.loads(unroff(re.search(r"^\.nf\n(.*?)^\.fi", man_section(MAN5, "EXAMPLE"), re.M | re.S).group(1)))
    default = int(struct_defaults()[("SysConfig", "idle_timeout")])
    ok(int(example["sysconfig"].get("idle_timeout", default)) >= default,
       "sockmapd.json(5)'s example sets idle_timeout below %d" % default)


@pytest.mark.slow
@test
def the_packager_gets_build_dependencies_only():
    """8: the README's package build installs what debian/control's Build-Depends lists (apt-get build-dep), not
    `make deps deps-deb` (the whole test set)."""
    lang, body = readme.block("README.md", "quickstart-build")
    eq(body.splitlines()[0], "apt-get build-dep ./")
    for path in readme.DOCS:
        not_contains(readme.text(path), "make deps deps-deb", path)
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        # Simulated: debian/control parses, and what it needs is installable.
        r = subprocess.run([apt, "-s", "build-dep", "./"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=scaled(120))
        eq(r.returncode, 0, "apt-get -s build-dep ./: %s" % r.stdout.decode(errors="replace")[-1500:])
        out = r.stdout.decode()
        for test_only in ("mariadb-server", "galera-4", "xinetd", "valgrind", "debootstrap", "nftables"):
            ok(not re.search(r"^Inst %s " % test_only, out, re.M), "build-dep would install %s" % test_only)


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
def quoted_benchmark_tables_are_the_runs():
    """The tables the guides quote live in bench/RESULTS.md only, and every figure in them is one of its dated runs."""
    results = read(os.path.join(REPO, "bench", "RESULTS.md"))
    start = results.index("## The tables the guides quote")
    end = results.index("\n## ", start + 1)
    quoted, runs = results[start:end], results[:start] + results[end:]
    ok(re.search(r"\b20\d\d-\d\d-\d\d\b", runs), "RESULTS.md gives the date of its runs")
    figures = sorted(set(table_figures(quoted)), key=float)
    ok(len(figures) >= 20, "figures found: %r" % figures)
    eq([n for n in figures if not re.search(r"(?<![\d.])%s(?![\d])" % re.escape(n), runs)], [],
       "figures of the quoted tables that no run in bench/RESULTS.md has")
    # The guides link to them rather than copying them.
    guide = readme.text("doc/testing-and-benchmarks.md")
    ok(not re.search(r"^\|.*\d ?(µs|/s)\b", guide, re.M), "benchmark tables in doc/testing-and-benchmarks.md")
    contains(guide, "../bench/RESULTS.md#make-bench-2026-12-02-median-of-5-rounds")


def log_shape(line):
    """A log line with what varies from run to run replaced: time, pid, port, socket path, version, duration."""
    line = re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", "TIME ", line)
    line = re.sub(r"sockmapd\[\d+\]", "sockmapd[PID]", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    line = re.sub(r"unix:\S*mysqld\.sock", "unix:SOCKET", line)
    line = re.sub(r"server \S+", "server VERSION", line)
    return re.sub(r"\b\d+ ms\b", "N ms", line)


@pytest.mark.slow
@test(timeout=120)
def logging_example_is_what_the_program_writes():
    """modes-and-units.md's log example: the same connection at loglevel debug and at info, in a log file."""
    lang, example = readme.block("doc/modes-and-units.md", "modes-log-example")
    eq(lang, "")
    want = [log_shape(line) for line in example.splitlines()]
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
    eq(got["debug"], want, "the guide's example at debug")
    eq(got["info"], [w for w in want if " debug: " not in w], "the same at info: the lines the README names")


# Settings the documents' prose names with a value that is deliberately not
# the shipped one (what a test sets), with where it says so.
NOT_SHIPPED = {("MaxConnections", "2"): "testing-and-benchmarks.md: bb_sendmail at the cap"}


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
def documented_unit_settings_are_the_shipped_ones():
    """Every `Setting=value` the prose of the README and the guides states, for a setting the units have, is a
    value they ship."""
    units = shipped_settings()
    # doc/DESIGN.md speaks of systemd's settings in general, not of the shipped units.
    prose = "\n".join(re.sub(r"^( *)```.*?^\1```$", "", readme.text(p), flags=re.M | re.S)
                      for p in readme.DOCS if p != "doc/DESIGN.md")
    said = [(k, v) for k, v in re.findall(r"`([A-Z]\w+)=([^`]+)`", prose) if k in units]
    ok(len(said) >= 5, "settings with values in the README: %r" % said)
    eq(sorted(set("%s=%s (units: %s)" % (k, v, sorted(units[k])) for k, v in said
                  if v not in units[k] and (k, v) not in NOT_SHIPPED)), [],
       "documented settings that no shipped unit has")
    # The exposure the guide gives the shipped units is the bound the
    # booted system suite measures them against.
    bound = re.search(r"ok\(score <= (\d+\.\d+)", read(os.path.join(REPO, "tests", "bb_system.py")))
    ok(bound, "bb_system checks the units' exposure")
    contains(" ".join(prose.split()), "`sockmapd@x.service` %s each" % bound.group(1), "the guide's exposure of the shipped units")


if __name__ == "__main__":
    main()
