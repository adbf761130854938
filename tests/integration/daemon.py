"""Helpers for tests that start the real effnetd on a loopback port and talk
HTTP to it: start/stop, requests with http.client, multipart bodies, sample
photos from Debian packages."""

import glob
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

SKIP = 77

# The outcome of one test script: check() prints a line and records a
# failure, finish() reports and exits non-zero if anything failed. Lines
# carry the time since start, for reading the logs of slow tests.
T0 = time.monotonic()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + f"[{time.monotonic() - T0:6.1f}s] " + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def finish(summary="PASS"):
    if failures:
        print(f"FAILED {len(failures)}: " + "; ".join(failures))
        sys.exit(1)
    print(summary)


class Daemon:
    """effnetd on 127.0.0.1 with a port picked by the kernel (--listen
    127.0.0.1:0); its stderr goes to a file that the test prints on failure.
    weights None: no --weights flag, so that a --config file names them
    (a flag would pin the file a reload loads)."""

    def __init__(self, exe, weights, workdir, *args, name="effnetd", env=None, wait=True, cpus=None):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        cmd = [exe] + (["--weights", weights] if weights else []) + ["--listen", "127.0.0.1:0"] + [str(a) for a in args]
        self.cmd = cmd
        # cpus: the CPUs it may run on (its usable CPUs, whatever the machine has).
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=full_env, preexec_fn=pin)
        self.port = None
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on https?://127\.0\.0\.1:(\d+)", self.log_text())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before listening:\n"
                                   f"{self.log_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start in {timeout} s:\n{self.log_text()}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def conn(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict with lower-case names, body bytes)."""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def classify(self, image, content_type="image/jpeg", query="", timeout=120):
        headers = {"Content-Type": content_type} if content_type else {}
        status, hdrs, body = self.request("POST", "/v1/classify" + query, image, headers, timeout)
        return status, hdrs, parse_json(body)

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def stop(self, timeout=120):
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"{self.name} did not stop on SIGTERM:\n{self.log_text()}")
        self.log.close()
        return self.proc.returncode


def parse_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return {"_unparsed": body[:200]}


def multipart(parts, boundary=None):
    """(body, content type) of multipart/form-data with one file part per
    (filename, content_type, bytes)."""
    boundary = boundary or "effnet-" + uuid.uuid4().hex
    out = []
    for i, (filename, ctype, data) in enumerate(parts):
        out.append(f"--{boundary}\r\n"
                   f'Content-Disposition: form-data; name="image{i}"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def sample_photos():
    """Real photos shipped by Debian packages: {name: path}."""
    photos = {}
    for path in ("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                 "/usr/lib/python3/dist-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg"):
        if os.path.exists(path):
            photos["grace_hopper.jpg"] = path
            break
    for name in ("chelsea", "coffee", "astronaut", "camera", "rocket", "motorcycle_left", "horse",
                 "hubble_deep_field", "immunohistochemistry", "page", "coins", "moon"):
        for path in glob.glob(f"/usr/lib/python3/dist-packages/skimage/data/{name}.*"):
            if path.endswith((".png", ".jpg")):
                photos[os.path.basename(path)] = path
    return photos


def read(path):
    with open(path, "rb") as f:
        return f.read()


def content_type_of(data):
    return "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"


def free_port():
    """A loopback TCP port that was free a moment ago, for programs that
    need a port number up front (socket activation, chroot)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get_status(port, path, source="127.0.0.1", timeout=3):
    """Status of GET path on a loopback port within timeout, or the name of
    the exception that came instead."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", path)
        return c.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        c.close()


def admin_port(d):
    """The port of a daemon's admin listener, from its log (0 if none)."""
    m = re.search(r"admin \(probes, metrics\) listening on https?://127\.0\.0\.1:(\d+)", d.log_text())
    return int(m.group(1)) if m else 0


def raw_http(port, data, timeout=30, read_all=True):
    """Sends raw bytes and returns what the server answers (until it closes
    or the timeout, when read_all)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_all and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)
    finally:
        s.close()


def find_effnet_tools():
    """(effnetd, effnet) from argv[1:3] (meson passes them)."""
    if len(sys.argv) < 3:
        sys.stderr.write(f"usage: {sys.argv[0]} EFFNETD EFFNET\n")
        sys.exit(2)
    return sys.argv[1], sys.argv[2]


def status_kb(pid, field):
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wait_until(cond, timeout, step=0.1):
    """cond()'s first true value within timeout seconds, else its last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


class Notify:
    """A NOTIFY_SOCKET listener (AF_UNIX datagrams), as systemd has: every
    message with the time it came."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key, value=None, after=0, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, m) in enumerate(self.messages):
                if i >= after and key in m and (value is None or m[key] == value):
                    return i
            time.sleep(0.05)
        return None

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()
