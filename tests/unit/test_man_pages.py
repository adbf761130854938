#!/usr/bin/python3
"""The man pages agree with the programs: every option `effnetd --help`
lists (and so every setting of the config table) is an entry of
effnetd(8)'s OPTIONS, under the setting's [section], with its environment
variable, its file key and its default, and every entry there is an option
of effnetd; every command of `effnet --help` is a subsection of effnet(1)'s
COMMANDS, with the same options, and back.

Usage: test_man_pages.py EFFNETD EFFNET EFFNETD.8 EFFNET.1
"""

import os
import re
import subprocess
import sys

SKIP = 77
failures = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what, flush=True)
    if not ok:
        failures.append(what)


def text_of(roff):
    """The text of a line of scdoc's roff: fonts and escapes removed."""
    for a, b in ((r"\fB", ""), (r"\fI", ""), (r"\fR", ""), (r"\&", ""), (r"\-", "-"), (r"\(aq", "'"),
                 (r"\*(Aq", "'"), ("\\\\", "\\")):
        roff = roff.replace(a, b)
    return roff


def sections(path):
    """{.SH name: [(.SS name or None, [lines])]} of a man page."""
    out, sh, ss = {}, None, None
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.startswith(".SH "):
            sh, ss = text_of(line[4:]).strip('"'), None
            out[sh] = [(None, [])]
        elif line.startswith(".SS ") and sh:
            ss = text_of(line[4:]).strip('"')
            out[sh].append((ss, []))
        elif sh and not line.startswith(".\\\""):
            out[sh][-1][1].append(line)
    return out


def entries(lines):
    """(term, body) of each indented entry: the term is the line before .RS."""
    result = []
    for i, line in enumerate(lines):
        if line.startswith(".RS") and i > 0:
            body = []
            for b in lines[i + 1:]:
                if b.startswith(".RE"):
                    break
                if not b.startswith("."):
                    body.append(text_of(b))
            result.append((text_of(lines[i - 1]), " ".join(body)))
    return result


OPT = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])(?![\w-])")


def options(text):
    return set(OPT.findall(text))


def run(*cmd):
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"{' '.join(os.path.basename(c) for c in cmd)} exits 0 ({p.returncode})")
    return p.stdout


def effnetd_page(effnetd, page):
    help_text = run(effnetd, "--help")
    # "  --name VALUE   help" then "     env EFFNETD_NAME, file [section] key, default D, ..."
    settings = {}
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  (--[a-z][a-z0-9-]*)", line)
        if m and i + 1 < len(lines):
            e = re.match(r"^\s+env (\w+), file \[(\w+)\] ([a-z0-9-]+)(?:, default ([^,]+))?", lines[i + 1])
            if e:
                settings[m.group(1)] = e.groups()
    listed = set()
    for first, second in re.findall(r"^  (--[a-z][a-z0-9-]*)(?:, (--[a-z][a-z0-9-]*))?",
                                    help_text.split("Options:\n", 1)[-1], re.M):
        listed |= {first, second} - {""}
    check(len(settings) >= 20, f"effnetd --help lists the settings ({len(settings)})")
    printed = set(re.findall(r"^#? ?([a-z0-9-]+) =", run(effnetd, "--print-config", "--weights", "x"), re.M))
    check(printed == {s[2] for s in settings.values()},
          f"--print-config and --help show the same settings (only in one: "
          f"{sorted(printed ^ {s[2] for s in settings.values()})})")

    opts = sections(page).get("OPTIONS")
    check(opts is not None, "effnetd(8) has OPTIONS")
    if opts is None:
        return
    man = {}
    for ss, body in opts:
        for term, text in entries(body):
            for o in options(term):
                man[o] = (ss, term, text)
    only_help, only_man = sorted(listed - set(man)), sorted(set(man) - listed)
    check(not only_help, f"every option of effnetd --help is in effnetd(8) (missing: {only_help})")
    check(not only_man, f"every option of effnetd(8) is in effnetd --help (not an option: {only_man})")
    for flag, (env, section, key, default) in sorted(settings.items()):
        if flag not in man:
            continue
        ss, term, text = man[flag]
        check(ss == f"[{section}]", f"effnetd(8): {flag} under [{section}] ({ss})")
        check(re.search(rf"\b{env}\b", text) is not None, f"effnetd(8): {flag} names {env}")
        check(re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", text) is not None,
              f"effnetd(8): {flag} names its file key {key}")
        if default is not None:
            m = re.search(r"Default: (\S+?)\.?(?:\s|$)", text)
            check(m is not None and m.group(1) == default,
                  f"effnetd(8): {flag} default {default} ({m.group(1) if m else 'none'})")
        else:
            check("Unset by default" in text or "Required" in text, f"effnetd(8): {flag} says it has no default")
    conf_default = re.search(r"--config FILE\s+config file \(default (\S+)", help_text)
    config_text = man.get("--config", (None, "", ""))[2]
    check(conf_default is not None and conf_default.group(1) in config_text,
          f"effnetd(8) and --help name the same default config file "
          f"({conf_default.group(1) if conf_default else None})")


def effnet_page(effnet, page):
    help_text = run(effnet, "--help")
    block = help_text.split("Commands:", 1)[-1].split("\n\n", 1)[0]
    commands, current = {}, None
    for line in block.splitlines():
        m = re.match(r"^  ([a-z][a-z0-9-]*)(?:\s|$)", line)
        if m:
            current = m.group(1)
            commands[current] = set()
        elif line.startswith("  --"):  # --version, --help: no command's
            current = None
        if current:
            commands[current] |= options(line)
    for name in ("classify", "pull"):  # their own --help may say more
        if name in commands:
            commands[name] |= options(run(effnet, name, "--help")) - {"--help"}
    check(len(commands) >= 5, f"effnet --help lists the commands ({sorted(commands)})")

    secs = sections(page)
    man = {ss: body for ss, body in secs.get("COMMANDS", []) if ss}
    check(sorted(man) == sorted(commands),
          f"effnet(1) COMMANDS are effnet --help's (help: {sorted(commands)}, man: {sorted(man)})")
    for name in sorted(set(man) & set(commands)):
        in_man = options(" ".join(text_of(b) for b in man[name] if not b.startswith(".")))
        check(in_man == commands[name],
              f"effnet(1) {name}: the options of --help (only in help: {sorted(commands[name] - in_man)}, "
              f"only in man: {sorted(in_man - commands[name])})")
    terms = set()
    for _, body in secs.get("OPTIONS", []):
        for term, _ in entries(body):
            terms |= options(term)
    every = set().union(*commands.values()) | {"--help", "--version"}
    check(terms == every, f"effnet(1) OPTIONS describe every option (undescribed: {sorted(every - terms)}, "
                          f"unknown: {sorted(terms - every)})")


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        sys.exit(2)
    effnetd, effnet, effnetd_man, effnet_man = sys.argv[1:]
    for page in (effnetd_man, effnet_man):
        if not os.path.exists(page):
            print(f"SKIP: {page} was not built (scdoc missing: bash scripts/install-deps.sh)")
            sys.exit(SKIP)
    effnetd_page(effnetd, effnetd_man)
    effnet_page(effnet, effnet_man)
    print(f"{len(failures)} failed" if failures else "PASS", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
