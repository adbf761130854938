#!/usr/bin/python3
"""The build enforces the module boundaries of docs/architecture.md.

For each folder of its "Boundaries" table, the test takes the compiler
command of one of the folder's sources from the build's
compile_commands.json and compiles, with those include arguments, a file
that includes one header of the tree. The header must compile when every
folder it reaches (itself and the headers it includes, transitively) is
the folder itself or one the table allows; otherwise it must fail with a
missing header. It also checks the rules that make those include paths
mean something: quoted includes name a header by its bare name (no '/',
so no "../engine/engine.h"; effnet/image.h is the public exception), and
no two headers of src/ and include/ share a name. And each foreign
library's header is included by one file only (LIBRARY_HEADERS), so that
its types and errors are turned into ours in one place.

It also enforces the request's line inside src/server/ (the "The line"
table of docs/architecture.md): each stage's files never include, directly
or through the server's own headers, the headers listed for it, so that
the worker pool, the batcher, the registry and the pipeline never reach
back into a transport.

Usage: test_boundaries.py SOURCE_ROOT BUILD_ROOT
"""

import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

failures = []
QUOTED = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
ANGLED = re.compile(r'^\s*#\s*include\s+<([^>]+)>', re.M)
# The one file of src/ and include/ that may include each library's headers
# (a prefix of the name in <...>); libcurl has one per use, the hub's
# downloads and the span export, which share nothing else.
LIBRARY_HEADERS = {
    "microhttpd.h": "src/server/http.c",
    "gnutls/": "src/server/tls.c",
    "curl/": ("src/hub/hub.c", "src/server/otlp.c"),
    "oneapi/dnnl/": "src/engine/engine.c",
    "turbojpeg.h": "src/image/jpeg.c",
    "jpeglib.h": "src/image/jpeg.c",
    "png.h": "src/image/png.c",
    "nghttp2/": "src/server/h2.c",
}


def check(ok, what):
    if not ok:
        print("FAILED  " + what, flush=True)
        failures.append(what)
    return ok


def table(src_root):
    """{folder: set of folders it may include} from docs/architecture.md."""
    text = open(os.path.join(src_root, "docs", "architecture.md"), encoding="utf-8").read()
    part = text.split("## Boundaries", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`")
        rows[folder] = set(re.findall(r"`([^`]+/)`", cells[1]))
    return rows


def line_table(src_root):
    """{file of src/server/: set of headers it may never reach} from docs/architecture.md."""
    text = open(os.path.join(src_root, "docs", "architecture.md"), encoding="utf-8").read()
    if "## The line" not in text:
        return {}
    part = text.split("## The line", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        banned = set(re.findall(r"`([^`]+\.h)`", cells[1]))
        for f in re.findall(r"`([^`]+\.[ch])`", cells[0]):
            rows[f] = banned
    return rows


def server_reach(server_dir, name, seen=None):
    """Every header a file of src/server/ includes, through the server's own headers."""
    seen = set() if seen is None else seen
    path = os.path.join(server_dir, name)
    if not os.path.exists(path):
        return seen
    for inc in QUOTED.findall(open(path, encoding="utf-8", errors="replace").read()):
        if inc not in seen:
            seen.add(inc)
            server_reach(server_dir, inc, seen)
    for inc in re.findall(r"^\s*#\s*include\s+<([^>]+)>", open(path, encoding="utf-8", errors="replace").read(), re.M):
        seen.add(inc)
    return seen


def headers(src_root, folders):
    """{include name: (folder, path)} of every header in the folders."""
    out = {}
    for folder in folders:
        top = os.path.join(src_root, folder)
        for dirpath, _, files in os.walk(top):
            # src/ holds no headers of its own; its subfolders are modules.
            if folder == "src/" and dirpath != top:
                continue
            for f in sorted(files):
                if not f.endswith(".h"):
                    continue
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, top)
                check(name not in out, f"{name}: one header of that name (in {folder}, also in {out.get(name, ('',))[0]})")
                out[name] = (folder, path)
    return out


def reached(name, hdrs, seen=None):
    """Folders a header reaches through its quoted includes."""
    seen = set() if seen is None else seen
    if name in seen or name not in hdrs:
        return set()
    seen.add(name)
    folder, path = hdrs[name]
    out = {folder}
    for inc in QUOTED.findall(open(path, encoding="utf-8").read()):
        out |= reached(inc, hdrs, seen)
    return out


def compiler_args(build_root, src_root, folder):
    """(directory, argv without source and outputs) of a source of folder
    compiled for the tree's own targets (not a test's)."""
    db = json.load(open(os.path.join(build_root, "compile_commands.json"), encoding="utf-8"))
    want = os.path.realpath(os.path.join(src_root, folder))
    for e in db:
        src = os.path.realpath(os.path.join(e["directory"], e["file"]))
        if os.path.dirname(src) != want or not e.get("output", "").startswith("src/"):
            continue
        argv, out, skip = shlex.split(e["command"]), [], False
        for a in argv:
            if skip:
                skip = False
            elif a in ("-o", "-c", "-MQ", "-MF"):
                skip = True
            elif a != "-MD":
                out.append(a)
        return e["directory"], out
    return None, None


def probe(directory, argv, name, tmp):
    path = os.path.join(tmp, re.sub(r"\W", "_", name) + ".c")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f'#include "{name}"\n')
    p = subprocess.run(argv + ["-fsyntax-only", path], cwd=directory, capture_output=True, text=True)
    return p.returncode, p.stderr


def main():
    src_root, build_root = sys.argv[1], sys.argv[2]
    rows = table(src_root)
    if not check(len(rows) >= 9, f"docs/architecture.md's Boundaries table has the folders ({sorted(rows)})"):
        return 1
    for folder, allowed in rows.items():
        for a in allowed:
            check(a in rows or a == "include/", f"{folder} may include {a}, a folder of the table")
    hdrs = headers(src_root, list(rows) + ["include/"])

    # Quoted includes by bare name only, everywhere in the tree's C.
    for top in ("src", "include", "tests"):
        for dirpath, _, files in os.walk(os.path.join(src_root, top)):
            for f in files:
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, f)
                for inc in QUOTED.findall(open(path, encoding="utf-8", errors="replace").read()):
                    check("/" not in inc or inc == "effnet/image.h",
                          f'{os.path.relpath(path, src_root)}: #include "{inc}" by its bare name')

    # The line: no stage reaches back into a transport.
    line = line_table(src_root)
    check(len(line) >= 8, f"docs/architecture.md's line table names the stages' files ({sorted(line)})")
    server_dir = os.path.join(src_root, "src", "server")
    for f, banned in sorted(line.items()):
        if not check(os.path.exists(os.path.join(server_dir, f)), f"src/server/{f} exists"):
            continue
        bad = server_reach(server_dir, f) & banned
        check(not bad, f"src/server/{f} never reaches {sorted(banned)} (it includes {sorted(bad)})")
    # Each library's headers in its one file.
    seen = set()
    for top in ("src", "include"):
        for dirpath, _, files in os.walk(os.path.join(src_root, top)):
            for f in files:
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, src_root)
                for inc in ANGLED.findall(open(path, encoding="utf-8", errors="replace").read()):
                    for prefix, owner in LIBRARY_HEADERS.items():
                        if inc.startswith(prefix):
                            seen.add(prefix)
                            owners = owner if isinstance(owner, tuple) else (owner,)
                            check(rel in owners, f"{rel}: #include <{inc}> (only {owner} includes {prefix})")
    for prefix, owner in LIBRARY_HEADERS.items():
        check(prefix in seen, f"{owner} includes {prefix} (the table names the file that does)")

    jobs = []
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for folder, allowed in rows.items():
            directory, argv = compiler_args(build_root, src_root, folder)
            if not check(argv is not None, f"{folder}: a source of it in compile_commands.json"):
                continue
            sub = os.path.join(tmp, folder.replace("/", "_"))
            os.mkdir(sub)
            for name in hdrs:
                ok = reached(name, hdrs) <= allowed | {folder}
                jobs.append((folder, name, ok, pool.submit(probe, directory, argv, name, sub)))
        good = bad = 0
        for folder, name, ok, fut in jobs:
            rc, err = fut.result()
            if ok:
                good += 1
                check(rc == 0, f"{folder} may include {name}: it compiles there\n{err}")
            else:
                bad += 1
                check(rc != 0 and "No such file or directory" in err,
                      f"{folder} may not include {name}: a missing header there\n{err}")
    print(f"{good} includes allowed and compiled, {bad} refused, in {len(rows)} folders")
    if failures:
        print(f"{len(failures)} failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
