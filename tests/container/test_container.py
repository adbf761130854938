#!/usr/bin/python3
"""Builds deploy/container/Containerfile with podman from a Debian base image
made here (debootstrap from this machine's Debian mirror, slimmed as Debian's
-slim images are, then `podman import`: no registry pull), and checks the
result: under 150 MB (Debian 12; 160 MB on Debian 13) with no weights inside, the user, the health check, the
layout meson install gives it (effnetd in /usr/sbin, effnet in /usr/bin, the
config, the labels, libeffnet without its development files), the oneDNN
runtime package of the release, the SBOM (SPDX 2.3: every Debian package of
the image, effnetd's files with their checksums), the binaries' --version,
the entrypoint's choice of weights, and /healthz served from the image's
root file system through chroot (containers cannot run on this machine).
Prints the image size. Slow (an apt install and a compile inside the
build): suite 'container', not run by default.

EFFNETD_CONTAINER_RELEASE: the Debian release to build on (bookworm, the
default, or trixie; the mirror must carry it).
Needs root, podman, debootstrap and unshare; exits 77 (skip) without them.
Cache: $EFFNETD_CONTAINER_CACHE (default /var/tmp/effnetd-container).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "integration"))
from daemon import SKIP, check, failures, finish, free_port  # noqa: E402
CACHE = os.environ.get("EFFNETD_CONTAINER_CACHE", "/var/tmp/effnetd-container")
RELEASE = os.environ.get("EFFNETD_CONTAINER_RELEASE", "bookworm")
BASE = f"localhost/effnetd-base:{RELEASE}-slim"
IMAGE = f"localhost/effnetd:test-{RELEASE}"
# The oneDNN runtime package each release's image must carry.
DNNL_RUNTIME = {"bookworm": "libdnnl2", "trixie": "libdnnl3.6"}
# Size bounds per release: Debian 13's base is 3 MB larger and its oneDNN
# 3.7 library 4 MB larger than Debian 12's 2.6 (measured: 136 and 153 MB).
MAX_MB = {"bookworm": 150, "trixie": 160}[RELEASE]
# What Debian's slim images leave out (debuerreotype's slimify): the same
# dpkg filter as the image's own (deploy/container/dpkg-nodoc.cfg).
NODOC = os.path.join(SOURCE_ROOT, "deploy", "container", "dpkg-nodoc.cfg")


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def mirrors():
    """(main, security) URIs of the Debian mirror apt is set up with here."""
    uris = []
    for path in sorted(os.listdir("/etc/apt/sources.list.d")):
        if path.endswith(".sources"):
            for line in open(os.path.join("/etc/apt/sources.list.d", path)):
                m = re.match(r"^URIs:\s*(\S+)", line)
                if m:
                    uris.append(m.group(1))
    if os.path.exists("/etc/apt/sources.list"):
        for line in open("/etc/apt/sources.list"):
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if m:
                uris.append(m.group(1))
    main = next((u for u in uris if "security" not in u), "http://deb.debian.org/debian")
    sec = next((u for u in uris if "security" in u), "http://deb.debian.org/debian-security")
    return main, sec


def slim(root):
    """Removes what dpkg-nodoc.cfg excludes and keeps the filter for later
    installs, as Debian's -slim images are made."""
    shutil.copy(NODOC, os.path.join(root, "etc/dpkg/dpkg.cfg.d/effnetd-nodoc"))
    for sub in ("usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian", "usr/share/linda",
                "usr/share/locale"):
        shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    doc = os.path.join(root, "usr/share/doc")
    for pkg in os.listdir(doc):
        path = os.path.join(doc, pkg)
        if os.path.isdir(path) and not os.path.islink(path):
            for name in os.listdir(path):
                if name != "copyright":
                    p = os.path.join(path, name)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    for sub in ("var/cache/apt", "var/lib/apt/lists"):
        for dirpath, _, names in os.walk(os.path.join(root, sub)):
            for name in names:
                os.unlink(os.path.join(dirpath, name))


def base_image():
    """localhost/effnetd-base:RELEASE-slim from a cached debootstrap."""
    if subprocess.run(["podman", "image", "exists", BASE]).returncode == 0:
        return
    os.makedirs(CACHE, exist_ok=True)
    root, tar = os.path.join(CACHE, f"rootfs-{RELEASE}"), os.path.join(CACHE, f"rootfs-{RELEASE}-slim.tar")
    if not os.path.exists(tar):
        shutil.rmtree(root, ignore_errors=True)
        main_uri, sec_uri = mirrors()
        run(["debootstrap", "--variant=minbase", RELEASE, root, main_uri], stdout=subprocess.DEVNULL)
        with open(os.path.join(root, "etc/apt/sources.list.d/debian.sources"), "w") as f:
            f.write(f"Types: deb\nURIs: {main_uri}\nSuites: {RELEASE} {RELEASE}-updates\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                    f"Types: deb\nURIs: {sec_uri}\nSuites: {RELEASE}-security\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        if os.path.exists(os.path.join(root, "etc/apt/sources.list")):
            os.unlink(os.path.join(root, "etc/apt/sources.list"))
        slim(root)
        run(["tar", "-C", root, "-cf", tar + ".tmp", "."])
        os.rename(tar + ".tmp", tar)
        shutil.rmtree(root, ignore_errors=True)
    run(["podman", "import", tar, BASE], stdout=subprocess.DEVNULL)


def dpkg_installed(root):
    """{package: version} of the image's dpkg database."""
    pkgs, cur = {}, {}
    for line in open(os.path.join(root, "var/lib/dpkg/status"), encoding="utf-8", errors="replace"):
        if not line.strip():
            if cur.get("Status", "").endswith(" installed"):
                pkgs[cur["Package"]] = cur.get("Version")
            cur = {}
        elif line[0] not in " \t":
            k, _, v = line.partition(":")
            cur[k] = v.strip()
    if cur.get("Status", "").endswith(" installed"):
        pkgs[cur["Package"]] = cur.get("Version")
    return pkgs


def check_sbom(root):
    path = root + "/usr/share/doc/effnetd/sbom.spdx.json"
    if not check(os.path.exists(path), "SBOM at /usr/share/doc/effnetd/sbom.spdx.json"):
        return
    doc = json.load(open(path))
    check(doc.get("spdxVersion") == "SPDX-2.3" and doc.get("SPDXID") == "SPDXRef-DOCUMENT"
          and doc.get("dataLicense") == "CC0-1.0", "SBOM is an SPDX 2.3 document")
    ids = [p["SPDXID"] for p in doc["packages"]] + [f["SPDXID"] for f in doc["files"]]
    rel_ok = all(r["spdxElementId"] in ids + ["SPDXRef-DOCUMENT"] and r["relatedSpdxElement"] in ids
                 for r in doc["relationships"])
    check(len(ids) == len(set(ids)) and rel_ok, "SBOM: unique SPDX ids, relationships name existing elements")
    debs = {}
    for p in doc["packages"]:
        purl = [r["referenceLocator"] for r in p.get("externalRefs", []) if r["referenceType"] == "purl"]
        if purl and purl[0].startswith("pkg:deb/"):
            debs[p["name"]] = p["versionInfo"]
    installed = dpkg_installed(root)
    check(debs == installed, f"SBOM lists every Debian package of the image at its version "
                             f"({len(debs)} listed, {len(installed)} installed; differing: "
                             f"{sorted(set(debs.items()) ^ set(installed.items()))[:6]})")
    own = [p for p in doc["packages"] if p["name"] == "effnetd"]
    version = subprocess.run(["chroot", root, "/usr/sbin/effnetd", "--version"], capture_output=True,
                             text=True).stdout.split()
    check(own and version and own[0]["versionInfo"] == version[1] and own[0]["licenseDeclared"] == "Apache-2.0",
          f"SBOM names effnetd {version[1:2]} and its licence")
    files = {f["fileName"].lstrip("."): f["checksums"][0]["checksumValue"] for f in doc["files"]}
    wrong = []
    for name in ("/usr/sbin/effnetd", "/usr/bin/effnet", "/usr/local/bin/effnetd-entrypoint"):
        digest = subprocess.run(["sha256sum", root + name], capture_output=True, text=True).stdout.split()[:1]
        if files.get(name) not in digest:
            wrong.append(name)
    check(not wrong and any(n.startswith("/usr/lib/") and "libeffnet.so.0" in n for n in files),
          f"SBOM has effnetd's files with their SHA-256 (wrong or missing: {wrong})")


def run_entrypoint(root, models, env, log_path):
    """The image's entrypoint as user 10001 in a chroot, with a private bind
    mount of the host directory models on /models."""
    script = f'mount --bind "$1" "$2/models" && exec chroot --userspec=10001:10001 "$2" /usr/local/bin/effnetd-entrypoint'
    with open(log_path, "wb") as log:
        return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", models, root],
                                stdout=subprocess.DEVNULL, stderr=log, env=env)


def main():
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("podman", "debootstrap", "unshare")):
        print("SKIP: needs root, podman, debootstrap and unshare")
        sys.exit(SKIP)
    base_image()
    t = time.monotonic()
    # RUN steps use chroot isolation: no OCI runtime can start containers here.
    run(["podman", "build", "--isolation=chroot", "--format=docker", "--build-arg", f"BASE={BASE}",
         "--build-arg", f"DEBIAN_RELEASE={RELEASE}", "-f",
         os.path.join(SOURCE_ROOT, "deploy", "container", "Containerfile"), "-t", IMAGE, SOURCE_ROOT])
    check(True, f"podman build ({RELEASE}) in {time.monotonic() - t:.0f} s")
    info = json.loads(subprocess.run(["podman", "image", "inspect", IMAGE], capture_output=True, check=True,
                                     text=True).stdout)[0]
    size = info.get("Size", 0)
    print(f"image size: {size / 1e6:.1f} MB ({RELEASE})", flush=True)
    check(0 < size < MAX_MB * 1e6, f"image under {MAX_MB} MB ({size / 1e6:.1f} MB)")
    cfg = info.get("Config", {})
    check(cfg.get("User") == "10001:10001", f"runs as a non-root user ({cfg.get('User')})")
    hc = info.get("Healthcheck") or cfg.get("Healthcheck") or {}
    check("/healthz" in json.dumps(hc), f"has a health check on /healthz ({json.dumps(hc)[:120]})")
    check(any(e.startswith("EFFNETD_LISTEN=0.0.0.0:8080") for e in cfg.get("Env", [])), "listens on :8080")

    root = subprocess.run(["podman", "image", "mount", IMAGE], capture_output=True, check=True,
                          text=True).stdout.strip()
    workdir = tempfile.mkdtemp(prefix="effnetd-container-")
    try:
        def there(path):
            return os.path.lexists(root + path)
        for path in ("/usr/sbin/effnetd", "/usr/bin/effnet", "/etc/effnetd/effnetd.conf",
                     "/usr/share/effnetd/labels/imagenet-1k.txt", "/usr/local/bin/effnetd-entrypoint", "/models"):
            check(there(path), f"{path} in the image")
        weights = [os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns if n.endswith(".safetensors")]
        check(not weights, f"no weights in the image ({[w[len(root):] for w in weights]})")
        libs = [n for n in os.listdir(root + "/usr/lib/x86_64-linux-gnu") if n.startswith("libeffnet")]
        check("libeffnet.so.0" in libs and "libeffnet.so" not in libs, f"libeffnet.so.0, no development link ({libs})")
        for path in ("/usr/include/effnet.h", "/usr/lib/x86_64-linux-gnu/pkgconfig/effnet.pc", "/usr/local/bin/effnetd",
                     "/usr/bin/cc", "/usr/bin/curl", "/usr/share/man/man1"):
            check(not there(path), f"no {path} in the image")
        installed = dpkg_installed(root)
        dnnl = sorted(p for p in installed if re.fullmatch(r"libdnnl[0-9.]+", p))
        check(dnnl == [DNNL_RUNTIME.get(RELEASE)], f"oneDNN runtime of {RELEASE}: {DNNL_RUNTIME.get(RELEASE)} ({dnnl})")
        conf = open(root + "/etc/effnetd/effnetd.conf").read()
        check(conf == open(os.path.join(SOURCE_ROOT, "etc", "effnetd.conf")).read(),
              "/etc/effnetd/effnetd.conf is etc/effnetd.conf")
        for tool, path in (("effnetd", "/usr/sbin/effnetd"), ("effnet", "/usr/bin/effnet")):
            v = subprocess.run(["chroot", "--userspec=10001:10001", root, path, "--version"],
                               capture_output=True, text=True, timeout=60)
            check(v.returncode == 0 and v.stdout.startswith(f"{tool} "), f"{tool} --version in the image ({v.stdout!r})")
        check_sbom(root)

        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EFFNETD_MAX_BATCH": "1"}
        models = os.path.join(workdir, "models")
        os.makedirs(models)
        os.chmod(workdir, 0o755)
        log_path = os.path.join(workdir, "entrypoint.log")
        p = run_entrypoint(root, models, env, log_path)
        rc = p.wait(120)
        text = open(log_path, "rb").read().decode(errors="replace")
        check(rc == 64 and "no weights" in text, f"without weights the entrypoint exits 64 and says why ({rc}: {text.strip()[:160]})")

        # Weights made by the image's own effnet, under a name of their own
        # (as KServe's storage initializer leaves a file): the only one there.
        script = 'mount --bind "$1" "$2/models" && exec chroot "$2" /usr/bin/effnet init-weights --variant b0 --seed 1 -o /models/efficientnetv2-b0.safetensors'
        subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", models, root],
                       check=True, timeout=600, env=env, stderr=subprocess.DEVNULL)
        os.chmod(os.path.join(models, "efficientnetv2-b0.safetensors"), 0o644)
        port, admin = free_port(), free_port()
        env.update({"EFFNETD_LISTEN": f"127.0.0.1:{port}", "EFFNETD_ADMIN_LISTEN": f"127.0.0.1:{admin}"})
        log_path = os.path.join(workdir, "effnetd.log")
        p = run_entrypoint(root, models, env, log_path)
        try:
            status, deadline = None, time.monotonic() + 600
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as r:
                        status = r.status
                        break
                except OSError:
                    time.sleep(0.5)
            check(status == 200, f"/readyz on the admin listener from the image's root file system ({status})")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as r:
                models_info = json.load(r)
            check("b0" in json.dumps(models_info) and "efficientnetv2-b0.safetensors" in json.dumps(models_info),
                  "the entrypoint serves the only .safetensors file of /models")
        finally:
            p.terminate()
            rc = p.wait(120)
            check(rc == 0, f"exits 0 on SIGTERM ({rc})")
            if failures:
                print(open(log_path, "rb").read().decode(errors="replace")[-3000:])
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    finish(f"PASS (image {size / 1e6:.1f} MB, {RELEASE})")


if __name__ == "__main__":
    main()
