"""readme — the README's sections and fenced blocks, and running its shell blocks as written.

    section(title)         the text of "## title" up to the next "## "
    blocks(title)          [(language, body)] of that section's fenced blocks
    run_shell(block, ...)  run a shell block's "$ " lines; the other lines are
                           the output they must print (a line ending in "..."
                           is a prefix, "  # ..." a comment); pids, durations and runs of
                           white space are normalised
"""

import os
import re
import subprocess

from harness import REPO, eq, ok, startswith, scaled, sockmapd_env, sockmapd_path, require_tool

README = os.path.join(REPO, "README.md")


def section(title):
    with open(README) as f:
        text = f.read()
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def titles():
    """Every "## " section title, in order."""
    with open(README) as f:
        return re.findall(r"^## (.*)$", f.read(), re.M)


def blocks(title):
    """[(language, body)] of the fenced blocks in a README section, indentation removed."""
    out = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```$", section(title), re.M | re.S):
        indent = len(m.group(1))
        out.append((m.group(2), "\n".join(line[indent:] for line in m.group(3).splitlines())))
    return out


def replace_all(text, pairs):
    for a, b in pairs:
        text = text.replace(a, b)
    return text


def normalise(line):
    """What varies from run to run: pids, durations."""
    line = re.sub(r"sockmapd\[\d+\]", "sockmapd[PID]", line)
    line = re.sub(r"\b\d+ ms\b", "N ms", line)
    return " ".join(line.split())  # tabs and runs of blanks as the README aligns them


def binary(command):
    """`sockmapd` or `build/sockmapd` as a command word: the binary under test."""
    return re.sub(r"(?<![\w/.-])(?:build/)?sockmapd(?=\s)", sockmapd_path(), command)


def run_shell(block, cfg=None, port=None, pdir=None, cwd=None):
    """Runs a README shell block; fails unless it prints what the README shows.

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
    cmd_subs = out_subs
    if pdir:
        cmd_subs += [("postmap -q", "%s -c %s -q" % (require_tool("postmap"), pdir)),
                     ("postconf ", "%s -c %s " % (require_tool("postconf"), pdir))]
    lines = body.splitlines()
    ok(lines and lines[0].startswith("$ "), "a shell block starts with a command: %r" % body)
    script = "\n".join(binary(replace_all(line[2:], cmd_subs)) for line in lines if line.startswith("$ "))
    # An output line may carry a comment ("value   # found: exit status 0");
    # a line that is only a comment stands for no output.
    want = [normalise(replace_all(re.sub(r"\s+# .*$|^\s*# .*$", "", line), out_subs))
            for line in lines if not line.startswith("$ ")]
    want = [w for w in want if w.strip()]
    r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=sockmapd_env(), timeout=scaled(60), cwd=cwd or REPO)
    got = [normalise(line) for line in r.stdout.decode("utf-8", "replace").splitlines()]
    eq(len(got), len(want), "lines printed by %r: %r" % (script, got))
    for w, g in zip(want, got):
        if w.endswith("..."):
            startswith(g, w[:-3])
        else:
            eq(g, w)


def subsections(title, level=4):
    """{heading: text} of the headings of `level` (4: "#### ") inside section `title`."""
    text = section(title)
    marks = list(re.finditer(r"^%s (.*)$" % ("#" * level), text, re.M))
    return {m.group(1): text[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            for i, m in enumerate(marks)}


def fenced(text):
    """[(language, body)] of the fenced blocks in `text`."""
    return [(m.group(2), m.group(3).rstrip("\n"))
            for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```$", text, re.M | re.S)]
