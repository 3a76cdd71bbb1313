"""readme — the shown blocks of README.md and doc/*.md, found by file and marker, and run as written.

A block a test uses carries a marker on the line before its opening fence
(indented as the fence is):

    <!-- test: quickstart-check -->
    ```sh
    $ sockmapd -c /etc/sockmapd/config.json --check-config
    ...
    ```

Names are unique within a file.  Section titles are for readers: a test
never looks a block up by one.

    DOCS                   the files whose blocks must all be run (README.md, doc/*.md)
    block(path, name)      (language, body) of the block marked `name` in `path`
    marked(path)           {name: (language, body)} of a file's marked blocks
    with_prefix(path, p)   [(name, language, body)] of the blocks whose name starts with p, in order
    all_blocks(path)       [(name or None, language, body, line)] of every fenced block in a file
    text(path), prose(path)  a file's text; the same without fenced blocks, white space folded
    run_shell(block, ...)  run a shell block's "$ " lines; the other lines are
                           the output they must print (a line ending in "..."
                           is a prefix, "  # ..." a comment); pids, durations and runs of
                           white space are normalised
"""

import glob
import os
import re
import subprocess

from harness import REPO, eq, ok, startswith, scaled, sockmapd_env, sockmapd_path, require_tool

README = os.path.join(REPO, "README.md")

_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```$", re.M | re.S)
_MARK = re.compile(r"<!-- test: ([\w.-]+) -->\s*$")


def docs():
    """README.md and the guides under doc/, as paths relative to the repository."""
    return ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "doc", "*.md")))


DOCS = docs()


def text(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def prose(path):
    """A file's text without its fenced blocks, runs of white space as one blank."""
    return " ".join(_FENCE.sub("", text(path)).split())


def _dedent(indent, body):
    return "\n".join(line[indent:] for line in body.splitlines())


def all_blocks(path):
    """[(marker name or None, language, body, line number)] of every fenced block of a file."""
    t = text(path)
    out = []
    for m in _FENCE.finditer(t):
        before = t[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        out.append((mark.group(1) if mark and before.strip().startswith("<!--") else None, m.group(2),
                    _dedent(len(m.group(1)), m.group(3)), t.count("\n", 0, m.start()) + 1))
    return out


def marked(path):
    """{name: (language, body)} of a file's marked blocks; a name used twice fails."""
    out = {}
    for name, lang, body, line in all_blocks(path):
        if name is None:
            continue
        ok(name not in out, "%s: marker %r used twice" % (path, name))
        out[name] = (lang, body)
    return out


def block(path, name):
    """(language, body) of the block marked `name` in `path` (README.md, doc/postfix.md, ...)."""
    found = marked(path)
    ok(name in found, "%s has a block marked %r (it has %s)" % (path, name, sorted(found)))
    return found[name]


def with_prefix(path, prefix):
    """[(name, language, body)] of the marked blocks whose name starts with `prefix`, in the file's order."""
    return [(n, lang, body) for n, lang, body, _ in all_blocks(path) if n and n.startswith(prefix)]


def replace_all(text, pairs):
    for a, b in pairs:
        text = text.replace(a, b)
    return text


def normalise(line):
    """What varies from run to run: pids, durations."""
    line = re.sub(r"sockmapd\[\d+\]", "sockmapd[PID]", line)
    line = re.sub(r"\b\d+ ms\b", "N ms", line)
    return " ".join(line.split())  # tabs and runs of blanks as the docs align them


def binary(command):
    """`sockmapd` or `build/sockmapd` as a command word: the binary under test."""
    return re.sub(r"(?<![\w/.-])(?:build/)?sockmapd(?=\s)", sockmapd_path(), command)


def commands_and_output(body):
    """A shell block's commands (the "$ " lines, without "$ ") and the output lines it shows, comments dropped."""
    lines = body.splitlines()
    ok(lines and lines[0].startswith("$ "), "a shell block with output starts with a command: %r" % body)
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    # An output line may carry a comment ("value   # found: exit status 0");
    # a line that is only a comment stands for no output.
    want = [re.sub(r"\s+# .*$|^\s*# .*$", "", line) for line in lines if not line.startswith("$ ")]
    return commands, [w for w in want if w.strip()]


def compare_output(got, want, what):
    """Printed lines against shown ones (normalised; a shown line ending in "..." is a prefix)."""
    got = [normalise(line) for line in got]
    want = [normalise(line) for line in want]
    eq(len(got), len(want), "lines printed by %s: %r" % (what, got))
    for w, g in zip(want, got):
        if w.endswith("..."):
            startswith(g, w[:-3])
        else:
            eq(g, w)


def run_shell(block, cfg=None, port=None, pdir=None, cwd=None):
    """Runs a shell block on this machine; fails unless it prints what the block shows.

    cfg replaces /etc/sockmapd/config.json, port 127.0.0.1:2224, pdir is
    Postfix's config directory for postmap/postconf; `sockmapd` and
    `build/sockmapd` are the binary under test.
    """
    lang, body = block
    eq(lang, "sh")
    out_subs = []
    if cfg:
        out_subs.append(("/etc/sockmapd/config.json", cfg))
    if port:
        out_subs.append(("127.0.0.1:2224", "127.0.0.1:%d" % port))
    cmd_subs = list(out_subs)
    if pdir:
        cmd_subs += [("postmap -q", "%s -c %s -q" % (require_tool("postmap"), pdir)),
                     ("postconf ", "%s -c %s " % (require_tool("postconf"), pdir))]
    commands, want = commands_and_output(body)
    script = "\n".join(binary(replace_all(c, cmd_subs)) for c in commands)
    r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=sockmapd_env(), timeout=scaled(60), cwd=cwd or REPO)
    compare_output(r.stdout.decode("utf-8", "replace").splitlines(), [replace_all(w, out_subs) for w in want],
                   repr(script))


def fenced(text):
    """[(language, body)] of the fenced blocks in `text`."""
    return [(m.group(2), _dedent(len(m.group(1)), m.group(3)))
            for m in _FENCE.finditer(text)]


def sample_database():
    """A throwaway MariaDB with config.example.sql, and config.example.json pointed at it: (db, config path).

    The documents' outputs are this data's (root@example.net), not tests/fixtures.sql's."""
    import json
    from harness import MariaDB, temp_config
    db = MariaDB(name="sample")
    db.start()
    db.load_fixtures(os.path.join(REPO, "config.example.sql"))
    with open(os.path.join(REPO, "config.example.json")) as f:
        cfg = json.load(f)
    cfg["database"].update({"host": [db.unix_entry], "username": MariaDB.APP_USER,
                            "password": MariaDB.APP_PASSWORD})
    return db, temp_config(cfg)
