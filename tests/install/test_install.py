#!/usr/bin/python3
"""meson install into a DESTDIR lays out a package: effnet in bindir,
effnetd in sbindir, libeffnet (exporting effnet_* only) with its headers and
effnet.pc, the systemd units with the installed paths, the config file where
the daemon looks for it, the labels, the man pages. Then a program built
against the installed library alone (tests/install/consumer.c, with
pkg-config and PKG_CONFIG_SYSROOT_DIR) classifies images with the public
API, and its top-1 must be `effnet classify`'s; the installed headers
compile under -std=c11 -Wall -Wextra -Werror -pedantic by themselves.

Usage: test_install.py MESON BUILD_DIR CC [SANITIZE]
"""

import filecmp
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def run(cmd, **kw):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def options(meson, build):
    p = run(meson + ["introspect", "--buildoptions", build])
    return {o["name"]: o["value"] for o in json.loads(p.stdout)}


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__)
        sys.exit(2)
    meson, build, cc = shlex.split(sys.argv[1]), sys.argv[2], shlex.split(sys.argv[3])
    sanitize = sys.argv[4] if len(sys.argv) == 5 and sys.argv[4] != "none" else ""
    if not shutil.which("pkg-config"):
        print("SKIP: pkg-config missing")
        sys.exit(SKIP)
    o = options(meson, build)
    prefix = o["prefix"]

    def at(d):
        return os.path.join(prefix, o[d]) if not os.path.isabs(o[d]) else o[d]

    bindir, sbindir, libdir, incdir = at("bindir"), at("sbindir"), at("libdir"), at("includedir")
    sysconfdir, datadir, mandir = at("sysconfdir"), at("datadir"), at("mandir")

    with tempfile.TemporaryDirectory(prefix="effnet-install-") as tmp:
        dest = os.path.join(tmp, "root")

        def d(path):
            return dest + path

        p = run(meson + ["install", "-C", build, "--no-rebuild", "--quiet", "--destdir", dest])
        if not check(p.returncode == 0, f"meson install --destdir ({p.stderr.strip()[-400:]})"):
            sys.exit(1)

        # The layout.
        installed = sorted(os.path.join(r, f)[len(dest):] for r, _, fs in os.walk(dest) for f in fs)
        print("installed:\n  " + "\n  ".join(installed), flush=True)
        roots = (prefix.rstrip("/") + "/", sysconfdir.rstrip("/") + "/")
        check(all(f.startswith(roots) for f in installed),
              f"everything is under {prefix} or {sysconfdir} ({[f for f in installed if not f.startswith(roots)]})")
        effnet, effnetd = d(f"{bindir}/effnet"), d(f"{sbindir}/effnetd")
        check(os.access(effnet, os.X_OK), f"effnet in {bindir}")
        check(os.access(effnetd, os.X_OK), f"effnetd in {sbindir}")
        so = d(f"{libdir}/libeffnet.so")
        check(os.path.islink(so) and os.path.exists(so), "libeffnet.so, a link for the linker")
        check(os.path.exists(d(f"{libdir}/libeffnet.so.0")), "libeffnet.so.0, the soname")
        static = [f for f in installed if f.endswith(".a")]
        check(not static, f"no static library of the modules is installed ({static})")
        soname = run(["readelf", "-d", so]).stdout if shutil.which("readelf") else ""
        check(not soname or "Library soname: [libeffnet.so.0]" in soname, "SONAME libeffnet.so.0")
        if shutil.which("nm"):
            table = run(["nm", "-D", "--defined-only", "--format=posix", so]).stdout.splitlines()
            names = [line.split()[0].split("@")[0] for line in table if len(line.split()) >= 2
                     and line.split()[1] != "A"]   # A: the version node LIBEFFNET_0
            exported = [n for n in names if not n.startswith("effnet_")]
            check(len(names) > 20 and not exported,
                  f"libeffnet exports {len(names)} effnet_* functions and nothing else ({exported[:5]})")
            check({"effnet_model_open", "effnet_image_prepare", "effnet_image_decode", "effnet_seeded_write"}
                  <= set(names), "model, image and seeded-weights API exported")
        for h in ("effnet.h", "effnet/image.h"):
            check(filecmp.cmp(d(f"{incdir}/{h}"), os.path.join(SOURCE_ROOT, "include", h), shallow=False),
                  f"{incdir}/{h}")
        pc = d(f"{libdir}/pkgconfig/effnet.pc")
        check(os.path.exists(pc), f"{libdir}/pkgconfig/effnet.pc")
        conf = d(f"{sysconfdir}/effnetd/effnetd.conf")
        check(os.path.exists(conf) and filecmp.cmp(conf, os.path.join(SOURCE_ROOT, "etc", "effnetd.conf"),
                                                   shallow=False), f"{sysconfdir}/effnetd/effnetd.conf")
        labels = d(f"{datadir}/effnetd/labels/imagenet-1k.txt")
        check(os.path.exists(labels) and sum(1 for _ in open(labels)) == 1000,
              f"{datadir}/effnetd/labels/imagenet-1k.txt, 1000 names")
        units = [f for f in installed if f.endswith("/effnetd.service")]
        if check(len(units) == 1, f"effnetd.service installed ({units})"):
            unitdir = os.path.dirname(units[0])
            check(unitdir.endswith("/systemd/system"), f"into a systemd system unit directory ({unitdir})")
            check(os.path.exists(d(f"{unitdir}/effnetd.socket")), "effnetd.socket beside it")
            service = open(d(units[0])).read()
            exec_start = re.search(r"^ExecStart=(\S+) --config (\S+)$", service, re.M)
            check(exec_start is not None and exec_start.group(1) == f"{sbindir}/effnetd"
                  and exec_start.group(2) == f"{sysconfdir}/effnetd/effnetd.conf",
                  f"ExecStart runs the installed effnetd on the installed config "
                  f"({exec_start.group(0) if exec_start else None})")
            check(re.search(r"@\w+@", service) is None, "no placeholder left in effnetd.service")
        man_built = os.path.exists(os.path.join(build, "man", "effnetd.8"))
        if man_built:
            for page in ("man8/effnetd.8", "man1/effnet.1"):
                check(os.path.exists(d(f"{mandir}/{page}")), f"{mandir}/{page}")
        else:
            print("note: no man pages in this build (scdoc missing)")

        # The daemon looks for its config where it is installed.
        h = run([effnetd, "--help"]).stdout
        check(f"(default {sysconfdir}/effnetd/effnetd.conf if it exists)" in h,
              f"effnetd's default config file is the installed one ({sysconfdir}/effnetd/effnetd.conf)")

        # Weights from the installed tool; the installed config accepts them.
        weights = os.path.join(tmp, "b0.safetensors")
        p = run([effnet, "init-weights", "--variant", "b0", "--classes", "10", "--seed", "3", "-o", weights])
        if not check(p.returncode == 0, f"installed effnet init-weights ({p.stderr.strip()[-300:]})"):
            sys.exit(1)
        p = run([effnetd, "--check-config", "--config", conf, "--weights", weights])
        check(p.returncode == 0, f"the installed config passes --check-config ({p.stderr.strip()[-300:]})")

        # A consumer of the installed library alone.
        env = dict(os.environ, PKG_CONFIG_PATH=d(f"{libdir}/pkgconfig"), PKG_CONFIG_SYSROOT_DIR=dest,
                   PKG_CONFIG_LIBDIR=d(f"{libdir}/pkgconfig"))
        p = run(["pkg-config", "--cflags", "--libs", "effnet"], env=env)
        check(p.returncode == 0 and dest in p.stdout, f"pkg-config effnet points into DESTDIR ({p.stdout.strip()})")
        flags = shlex.split(p.stdout)
        version = run(["pkg-config", "--modversion", "effnet"], env=env).stdout.strip()
        in_header = re.search(r'^#define EFFNET_VERSION "([^"]+)"', open(d(f"{incdir}/effnet.h")).read(), re.M)
        check(in_header is not None and in_header.group(1) == version,
              f"effnet.h's EFFNET_VERSION is effnet.pc's {version} ({in_header.group(1) if in_header else None})")
        strict = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]
        san = [f"-fsanitize={sanitize}"] if sanitize else []
        cflags = [f for f in flags if f.startswith("-I")]
        cxx = shutil.which("c++")
        for header in ("effnet.h", "effnet/image.h"):   # each by itself
            hdr = os.path.join(tmp, "header.c")
            with open(hdr, "w") as f:
                f.write(f"#include <{header}>\nint main(void) {{ return 0; }}\n")
            p = run(cc + strict + cflags + ["-c", hdr, "-o", os.path.join(tmp, "header.o")])
            check(p.returncode == 0, f"installed {header} compiles with {' '.join(strict)} ({p.stderr.strip()[:400]})")
            if cxx:
                shutil.copy(hdr, hdr + "c")
                p = run([cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"] + cflags
                        + ["-c", hdr + "c", "-o", os.path.join(tmp, "header_cxx.o")])
                check(p.returncode == 0, f"and as C++11 ({p.stderr.strip()[:400]})")
        consumer = os.path.join(tmp, "consumer")
        p = run(cc + strict + san + [os.path.join(SOURCE_ROOT, "tests", "install", "consumer.c"), "-o", consumer]
                + flags, env=env)
        if not check(p.returncode == 0, f"consumer.c builds against the installed libeffnet ({p.stderr[:600]})"):
            sys.exit(1)
        run_env = dict(os.environ, LD_LIBRARY_PATH=d(libdir))
        if shutil.which("ldd"):
            deps = run(["ldd", consumer], env=run_env).stdout
            m = re.search(r"libeffnet\.so\.0 => (\S+)", deps)
            check(m is not None and m.group(1).startswith(dest),
                  f"consumer loads the installed libeffnet.so.0 ({m.group(1) if m else None})")
        images = [os.path.join(SOURCE_ROOT, "tests", "fuzz", "corpus", "jpeg", "baseline_420_64x48.jpg"),
                  os.path.join(SOURCE_ROOT, "tests", "fuzz", "corpus", "png", "adam7_rgb8_9x7.png")]
        photo = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
        if os.path.exists(photo):
            images.append(photo)
        p = run([consumer, weights] + images, env=run_env)
        check(p.returncode == 0, f"consumer classifies {len(images)} images ({p.stderr.strip()[-400:]})")
        got = {}
        for line in p.stdout.splitlines():
            path, idx, score = line.rsplit(" ", 2)
            got[path] = (int(idx), float(score))
        p = run([effnet, "classify", "--weights", weights, "--top-k", "1"] + images)
        check(p.returncode == 0, f"effnet classify ({p.stderr.strip()[-300:]})")
        want = [json.loads(line)["predictions"][0] for line in p.stdout.splitlines()]
        check(len(want) == len(images) and len(got) == len(images), "one answer per image from both")
        for img, w in zip(images, want):
            g = got.get(img)
            check(g is not None and g[0] == w["index"] and abs(g[1] - w["score"]) <= 2e-6,
                  f"{os.path.basename(img)}: consumer top-1 {g} = effnet classify ({w['index']}, {w['score']})")

    print(f"{len(failures)} failed" if failures else "PASS", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
