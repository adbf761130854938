#!/usr/bin/python3
"""Builds deploy/container/Containerfile with podman from a Debian 12 base
image made here (debootstrap from this machine's Debian mirror, then
`podman import`: no registry pull), and checks the result: the user, the
health check, the layout meson install gives it (effnetd in /usr/sbin,
effnet in /usr/bin, the config, the labels, libeffnet without its
development files), the binaries' --version, and /healthz served from the
image's root file system through chroot (containers cannot run on this
machine).
Prints the image size. Slow (an apt install and a compile inside the
build): suite 'container', not run by default.

Needs root, podman and debootstrap; exits 77 (skip) without them.
Cache: $EFFNETD_CONTAINER_CACHE (default /var/tmp/effnetd-container).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "integration"))
from daemon import SKIP, check, failures, finish, free_port  # noqa: E402
CACHE = os.environ.get("EFFNETD_CONTAINER_CACHE", "/var/tmp/effnetd-container")
BASE = "localhost/effnetd-base:bookworm"
IMAGE = "localhost/effnetd:test"
def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def mirror():
    """The Debian mirror apt is set up with here."""
    for path in sorted(os.listdir("/etc/apt/sources.list.d")):
        if path.endswith(".sources"):
            for line in open(os.path.join("/etc/apt/sources.list.d", path)):
                m = re.match(r"^URIs:\s*(\S+)", line)
                if m and "security" not in m.group(1):
                    return m.group(1)
    if os.path.exists("/etc/apt/sources.list"):
        for line in open("/etc/apt/sources.list"):
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def base_image():
    """localhost/effnetd-base:bookworm from a cached debootstrap."""
    if subprocess.run(["podman", "image", "exists", BASE]).returncode == 0:
        return
    os.makedirs(CACHE, exist_ok=True)
    root, tar = os.path.join(CACHE, "rootfs"), os.path.join(CACHE, "rootfs.tar")
    if not os.path.exists(tar):
        shutil.rmtree(root, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", "bookworm", root, mirror()], stdout=subprocess.DEVNULL)
        src = "/etc/apt/sources.list.d"
        for name in os.listdir(src):
            if name.endswith(".sources"):
                shutil.copy(os.path.join(src, name), os.path.join(root, "etc/apt/sources.list.d", name))
        # What debootstrap downloaded has no place in an image.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for name in os.listdir(os.path.join(root, sub)):
                path = os.path.join(root, sub, name)
                if os.path.isfile(path):
                    os.unlink(path)
        run(["tar", "-C", root, "-cf", tar + ".tmp", "."])
        os.rename(tar + ".tmp", tar)
        shutil.rmtree(root, ignore_errors=True)
    run(["podman", "import", tar, BASE], stdout=subprocess.DEVNULL)


def main():
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("debootstrap"):
        print("SKIP: needs root, podman and debootstrap")
        sys.exit(SKIP)
    base_image()
    t = time.monotonic()
    # RUN steps use chroot isolation: no OCI runtime can start containers here.
    run(["podman", "build", "--isolation=chroot", "--format=docker", "--build-arg", f"BASE={BASE}", "-f",
         os.path.join(SOURCE_ROOT, "deploy", "container", "Containerfile"), "-t", IMAGE, SOURCE_ROOT])
    check(True, f"podman build in {time.monotonic() - t:.0f} s")
    info = json.loads(subprocess.run(["podman", "image", "inspect", IMAGE], capture_output=True, check=True,
                                     text=True).stdout)[0]
    size = info.get("Size", 0)
    print(f"image size: {size / 1e6:.1f} MB", flush=True)
    cfg = info.get("Config", {})
    check(cfg.get("User") == "10001:10001", f"runs as a non-root user ({cfg.get('User')})")
    hc = info.get("Healthcheck") or cfg.get("Healthcheck") or {}
    check("/healthz" in json.dumps(hc), f"has a health check on /healthz ({json.dumps(hc)[:120]})")
    check(any(e.startswith("EFFNETD_LISTEN=0.0.0.0:8080") for e in cfg.get("Env", [])), "listens on :8080")

    root = subprocess.run(["podman", "image", "mount", IMAGE], capture_output=True, check=True,
                          text=True).stdout.strip()
    try:
        def there(path):
            return os.path.lexists(root + path)
        for path in ("/usr/sbin/effnetd", "/usr/bin/effnet", "/etc/effnetd/effnetd.conf",
                     "/usr/share/effnetd/labels/imagenet-1k.txt", "/usr/share/effnetd/default-v2s.safetensors",
                     "/usr/local/bin/effnetd-entrypoint"):
            check(there(path), f"{path} in the image")
        libs = [n for n in os.listdir(root + "/usr/lib/x86_64-linux-gnu") if n.startswith("libeffnet")]
        check("libeffnet.so.0" in libs and "libeffnet.so" not in libs, f"libeffnet.so.0, no development link ({libs})")
        for path in ("/usr/include/effnet.h", "/usr/lib/x86_64-linux-gnu/pkgconfig/effnet.pc", "/usr/local/bin/effnetd"):
            check(not there(path), f"no {path} in the image")
        conf = open(root + "/etc/effnetd/effnetd.conf").read()
        check(conf == open(os.path.join(SOURCE_ROOT, "etc", "effnetd.conf")).read(),
              "/etc/effnetd/effnetd.conf is etc/effnetd.conf")
        for tool, path in (("effnetd", "/usr/sbin/effnetd"), ("effnet", "/usr/bin/effnet")):
            v = subprocess.run(["chroot", "--userspec=10001:10001", root, path, "--version"],
                               capture_output=True, text=True, timeout=60)
            check(v.returncode == 0 and v.stdout.startswith(f"{tool} "), f"{tool} --version in the image ({v.stdout!r})")
        port = free_port()
        log_path = os.path.join(CACHE, "chroot-effnetd.log")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EFFNETD_LISTEN": f"127.0.0.1:{port}",
               "EFFNETD_MAX_BATCH": "1"}
        with open(log_path, "wb") as log:
            p = subprocess.Popen(["chroot", "--userspec=10001:10001", root, "/usr/local/bin/effnetd-entrypoint"],
                                 stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            status, deadline = None, time.monotonic() + 600
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                        status = r.status
                        break
                except OSError:
                    time.sleep(0.5)
            text = open(log_path, "rb").read().decode(errors="replace")
            check(status == 200, f"/healthz from the image's root file system ({status})")
            check("built-in seeded weights" in text and "efficientnetv2-s" in text,
                  "without /models the embedded default weights are served")
        finally:
            p.terminate()
            rc = p.wait(120)
            check(rc == 0, f"exits 0 on SIGTERM ({rc})")
            if failures:
                print(open(log_path, "rb").read().decode(errors="replace")[-3000:])
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True)
    finish(f"PASS (image {size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
