#!/usr/bin/python3
"""What clients make the daemon hold stays within memory-budget, proven by
its resident memory.

Usage: test_memory.py EFFNETD EFFNET

Each attack runs against a daemon with a small budget; its peak resident
memory (VmHWM, reset to the current size just before the attack) may grow
by at most the budget plus a fixed allowance (ALLOWANCE_MB: decoding
scratch of the decoding threads, answers' JSON trees being built, libc's
arenas), and /healthz must keep answering meanwhile:
  1. tensors: 24 clients each send 16 small JPEGs with top_k=1000 and never
     read the answer; a request is admitted by its tensors before any image
     is decoded, so most get 503 at once (before, each held its 9.6 MB of
     tensors first and was refused by the batcher after decoding);
  2. slow images: 12 multipart requests of a tiny JPEG and then 31 flat
     PNGs (before, each allocated its 32 tensors at its first image and held
     them while the PNGs decoded);
  3. the per-client share: one address holding slow uploads cannot fill
     the budget; its next upload gets 503 naming max-client-share while
     another address is served; a request that could never fit the share
     gets 413;
  4. clients that leave while their images are being decoded stop costing
     decoding time: the pool is idle within seconds (before, every image of
     every abandoned request was decoded), and the requests are counted as
     client_closed_request.
"""
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish, status_kb  # noqa: E402
from test_decode import png  # noqa: E402

MB = 1 << 20
ALLOWANCE_MB = 48
# Under AddressSanitizer every allocation carries redzones and shadow
# memory (an eighth of what is touched): the same bound, scaled.
ASAN = "asan" in os.environ.get("MESON_BUILD_ROOT", "") or bool(os.environ.get("ASAN_OPTIONS"))
SCALE = 1.5 if ASAN else 1.0
ASAN_NOTE = ", x1.5 under AddressSanitizer" if ASAN else ""


class Peak:
    """The growth of a process's resident memory from now: its peak (VmHWM)
    is reset to its current size (clear_refs 5), read at the end."""

    def __init__(self, pid):
        self.pid = pid
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        self.base_kb = status_kb(pid, "VmRSS")

    def growth_mb(self):
        return (status_kb(self.pid, "VmHWM") - self.base_kb) / 1024


class Prober:
    """GET /healthz every 0.2 s on its own thread: statuses and latencies."""

    def __init__(self, port, source="127.0.0.250"):
        self.port, self.source = port, source
        self.got, self.ms = [], []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.got.append(dm.get_status(self.port, "/healthz", self.source, timeout=3))
            self.ms.append((time.monotonic() - t0) * 1000)
            self.stop.wait(0.2)

    def finish(self):
        self.stop.set()
        self.t.join()
        return self.got, (statistics.median(self.ms) if self.ms else float("nan"))


def env_for_rss():
    """Under AddressSanitizer freed memory waits in a quarantine: none, so
    that what is freed leaves the RSS as in a normal build."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"}


def unread_socket(port, source):
    """A connection from source whose small receive window (set before
    connecting) and small segments keep an unread answer on the daemon's
    side, as for a client on a slow link."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    c.settimeout(60)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    return c


def post(sock, body, ctype, query=""):
    sock.sendall(f"POST /v1/classify{query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def source(i):
    """A loopback address of its own for client i: each has its own share."""
    return f"127.0.0.{10 + i}"


def settle(d, timeout=120):
    """Waits until no request is being decoded or queued."""
    def idle():
        m = d.metrics()
        return (m.get("effnetd_decode_busy_threads", 0) == 0 and m.get("effnetd_decode_queue_requests", 0) == 0
                and m.get("effnetd_queue_images", 0) == 0)
    time.sleep(0.5)
    return dm.wait_until(idle, timeout)


def attack_tensors(d, photo, clients=24, images=16):
    """clients send images JPEGs each with top_k=1000 and never read."""
    body, ctype = dm.multipart([("p.jpg", "image/jpeg", photo)] * images)
    socks = []
    for i in range(clients):
        s = unread_socket(d.port, source(i))
        post(s, body, ctype, "?top_k=1000")
        socks.append(s)
    settle(d)
    time.sleep(1.0)
    return socks


def attack_slow_images(d, tiny, flat, clients=12, images=32):
    """clients send a tiny JPEG and then images-1 flat PNGs each; read the
    answers when done (a list of statuses)."""
    body, ctype = dm.multipart([("t.jpg", "image/jpeg", tiny)] + [("f.png", "image/png", flat)] * (images - 1))
    results = []

    def one(i):
        c = None
        try:
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=300, source_address=(source(i), 0))
            c.request("POST", "/v1/classify", body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            r.read()
            results.append(r.status)
        except (OSError, Exception) as e:  # noqa: BLE001 - recorded
            results.append(type(e).__name__)
        finally:
            if c:
                c.close()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_tensors(effnetd, weights, workdir, photo):
    budget = 48
    d = dm.Daemon(effnetd, weights, workdir, "--memory-budget", f"{budget}M", "--v2-max-body-bytes", "8M",
                  "--access-log=false", name="tensors", env=env_for_rss())
    socks = []
    try:
        d.classify(photo)
        peak = Peak(d.proc.pid)
        probe = Prober(d.port)
        socks = attack_tensors(d, photo)
        got, ms = probe.finish()
        grown = peak.growth_mb()
        m = d.metrics()
        refused = m.get('effnetd_memory_refused_total{limit="budget"}', 0)
        bound = (budget + ALLOWANCE_MB) * SCALE
        print(f"     24 x 16 JPEGs, top_k=1000, unread: peak RSS +{grown:.0f} MB, {refused:.0f} refused by the budget, "
              f"{m.get('effnetd_http_answer_bytes', 0):.0f} answer bytes held; /healthz median {ms:.1f} ms")
        check(grown < bound, f"24 clients x 16 images never read: peak RSS grew {grown:.0f} MB, under "
              f"{bound:.0f} MB: memory-budget {budget} MB + {ALLOWANCE_MB} MB{ASAN_NOTE} "
              f"(tensors of all: {24 * 16 * 0.6:.0f} MB)")
        check(refused > 0, f"requests that do not fit are refused by the budget ({refused:.0f})")
        check(got and all(g == 200 for g in got), f"/healthz answered throughout ({len(got)} probes)")
    finally:
        for s in socks:
            s.close()
        d.stop()


def test_slow_images(effnetd, weights, workdir, tiny, flat):
    budget = 48
    d = dm.Daemon(effnetd, weights, workdir, "--memory-budget", f"{budget}M", "--v2-max-body-bytes", "8M",
                  "--max-request-pixels", 10 ** 10, "--access-log=false", name="slow-images", env=env_for_rss())
    try:
        d.classify(tiny)
        peak = Peak(d.proc.pid)
        probe = Prober(d.port)
        results = attack_slow_images(d, tiny, flat)
        got, ms = probe.finish()
        grown = peak.growth_mb()
        bound = (budget + ALLOWANCE_MB) * SCALE
        print(f"     12 x (a tiny JPEG + 31 flat PNGs): statuses {sorted(results, key=str)}, peak RSS "
              f"+{grown:.0f} MB; /healthz median {ms:.1f} ms")
        check(grown < bound, f"12 requests of 32 images, flat PNGs after a tiny JPEG: peak RSS grew {grown:.0f} MB, "
              f"under {bound:.0f} MB: memory-budget {budget} MB + {ALLOWANCE_MB} MB{ASAN_NOTE} (their tensors: "
              f"{12 * 32 * 0.6:.0f} MB)")
        check(200 in results and set(results) <= {200, 503}, f"some are served, the others get 503 ({results})")
        check(got and all(g == 200 for g in got), f"/healthz answered throughout ({len(got)} probes)")
    finally:
        d.stop()


def test_client_share(effnetd, weights, workdir, photo):
    """One address holds two slow 10 MB uploads (its share, 24 MB, fits two):
    its third upload is refused with 503 naming max-client-share, while
    another address is served."""
    budget, share = 48, 24
    d = dm.Daemon(effnetd, weights, workdir, "--memory-budget", f"{budget}M", "--v2-max-body-bytes", "8M",
                  "--max-client-share", f"{share}M", "--max-body-bytes", "10M", "--body-timeout", 120,
                  "--access-log=false", name="share", env=env_for_rss())
    held = []
    try:
        peak = Peak(d.proc.pid)
        size = 10 * MB
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
            s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                      f"Content-Length: {size}\r\n\r\n".encode() + b"x" * (size - 1000))
            held.append(s)
        dm.wait_until(lambda: d.metrics().get("effnetd_memory_charged_bytes", 0) >= 2 * size, 20)
        charged = d.metrics().get("effnetd_memory_charged_bytes", 0)
        status, hdrs, body = d.request("POST", "/v1/classify", b"x" * (size - 1000), {"Content-Type": "image/jpeg"})
        err = dm.parse_json(body).get("error", {})
        check(status == 503 and "max-client-share" in err.get("message", "") and hdrs.get("retry-after"),
              f"a third 10 MB upload from the address holding two gets 503 naming max-client-share "
              f"({status}, {err}; {charged / MB:.1f} MB charged)")
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60, source_address=("127.0.0.2", 0))
        c.request("POST", "/v1/classify", body=photo, headers={"Content-Type": "image/jpeg"})
        r = c.getresponse()
        r.read()
        c.close()
        check(r.status == 200, f"another address is served meanwhile ({r.status})")
        grown = peak.growth_mb()
        check(grown < (budget + ALLOWANCE_MB) * SCALE, f"peak RSS grew {grown:.0f} MB, under {budget} MB + "
              f"{ALLOWANCE_MB} MB{ASAN_NOTE}")
        check(dm.get_status(d.port, "/healthz", "127.0.0.3") == 200, "/healthz answers")
    finally:
        for s in held:
            s.close()
        d.stop()


def test_never_fits(effnetd, weights, workdir, tiny):
    """A request whose images alone need more than one client's share can
    never be served: 413 naming max-client-share, not a 503 to retry."""
    d = dm.Daemon(effnetd, weights, workdir, "--memory-budget", "16M", "--max-client-share", "12M",
                  "--max-body-bytes", "8M", "--v2-max-body-bytes", "8M", "--access-log=false", name="never-fits")
    try:
        body, ctype = dm.multipart([("t.jpg", "image/jpeg", tiny)] * 24)
        status, _, answer = d.classify(body, ctype)
        err = (answer or {}).get("error", {})
        check(status == 413 and "max-client-share" in err.get("message", ""),
              f"24 images at 224 px (14 MB of tensors) with a share of 12 MB: 413 ({status}, {err})")
        body, ctype = dm.multipart([("t.jpg", "image/jpeg", tiny)] * 8)
        status, _, _ = d.classify(body, ctype)
        check(status == 200, f"8 of them are served ({status})")
        # The same for /v2 BYTES images.
        for n, want in ((24, 413), (8, 200)):
            infer = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [n],
                                            "data": [base64.b64encode(tiny).decode()] * n}]}).encode()
            status, _, answer = d.request("POST", "/v2/models/efficientnetv2-b0/infer", infer,
                                          {"Content-Type": "application/json"})
            err = dm.parse_json(answer).get("error", "")
            check(status == want and (want == 200 or "max-client-share" in err),
                  f"/v2 BYTES of {n} images: {want} ({status}, {str(err)[:120]})")
    finally:
        d.stop()


def test_left_while_decoding(effnetd, weights, workdir, tiny, big):
    """Three clients send 32 images each (a tiny JPEG, then flat PNGs that
    take a while each) and leave: the decoding pool is idle again within a
    few images' time, not after all 96."""
    d = dm.Daemon(effnetd, weights, workdir, "--decode-threads", 1, "--max-request-pixels", 10 ** 10,
                  "--deadline-ms", 600000, "--access-log=false", name="left")
    try:
        body, ctype = dm.multipart([("t.jpg", "image/jpeg", tiny)] + [("b.png", "image/png", big)] * 31)
        t0 = time.monotonic()
        d.classify(big, "image/png", query="?top_k=1")
        one = time.monotonic() - t0
        socks = []
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
            post(s, body, ctype)
            socks.append(s)
        dm.wait_until(lambda: d.metrics().get("effnetd_decode_busy_threads", 0) >= 1, 20, 0.05)
        time.sleep(0.2)
        for s in socks:
            s.close()
        t_close = time.monotonic()
        idle = dm.wait_until(lambda: d.metrics().get("effnetd_decode_busy_threads", 1) == 0 and
                        d.metrics().get("effnetd_decode_queue_requests", 1) == 0, 120, 0.1)
        took = time.monotonic() - t_close
        m = d.metrics()
        gone = m.get('effnetd_http_errors_total{code="client_closed_request"}', 0)
        limit = max(5.0, 6 * one)
        check(idle and took < limit, f"3 requests of 32 slow images whose clients left: the decoding pool is idle "
              f"{took:.1f} s later (one image takes {one:.2f} s; all of them would take {96 * one:.0f} s)")
        check(gone == 3, f"they are counted as client_closed_request ({gone:.0f})")
        check(dm.get_status(d.port, "/healthz") == 200, "/healthz answers")
        status, _, _ = d.classify(tiny)
        check(status == 200, f"a new request is served ({status})")
    finally:
        d.stop()


def tiny_jpeg():
    """A 64x64 JPEG (a gradient) from cjpeg (Debian's libjpeg-turbo-progs)."""
    ppm = b"P6 64 64 255\n" + bytes(c for y in range(64) for x in range(64) for c in (4 * x, 4 * y, 128))
    return subprocess.run(["cjpeg", "-quality", "85"], input=ppm, capture_output=True, check=True).stdout


def main():
    effnetd, effnet = dm.find_effnet_tools()
    if "grace_hopper.jpg" not in dm.sample_photos() or not shutil.which("cjpeg"):
        print("SKIP: no sample photo (Debian package python3-matplotlib) or no cjpeg (libjpeg-turbo-progs)")
        sys.exit(dm.SKIP)
    with tempfile.TemporaryDirectory(prefix="effnetd-memory-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        photo = dm.read(dm.sample_photos()["grace_hopper.jpg"])
        tiny = tiny_jpeg()
        test_tensors(effnetd, weights, workdir, photo)
        test_slow_images(effnetd, weights, workdir, tiny, png(1000, 1000))
        test_client_share(effnetd, weights, workdir, photo)
        test_never_fits(effnetd, weights, workdir, tiny)
        test_left_while_decoding(effnetd, weights, workdir, tiny, png(3000, 3000))
    finish()


if __name__ == "__main__":
    main()
