#!/usr/bin/python3
"""Image decoding happens off the HTTP threads, on a bounded pool.

Usage: test_decode.py EFFNETD EFFNET

  1. three requests of 32 flat-black 6000x6000 PNGs each (3.4 MB bodies,
     some 30 s of decoding each on one CPU) in flight: /healthz and the
     classification of a small PNG on the main port each answer within 1 s,
     and the large requests get an answer (their result or their deadline);
  2. with decode-threads 1 and decode-queue 1, a third request of large
     images while two are being decoded gets 503 with Retry-After, the
     error code overloaded and a message naming the setting, counted in
     effnetd_decode_rejected_total; the two admitted ones are answered;
  3. a JPEG that libjpeg warns about is decoded once (the unit test of
     the image module counts it; here: it is classified, not refused).
"""
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402


def png(w, h, pixel=None):
    """An RGB PNG: flat black, or rows from pixel(x, y) -> (r, g, b)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    z = zlib.compressobj(9)
    if pixel is None:
        row = b"\0" * (3 * w + 1)
        data = b"".join(z.compress(row) for _ in range(h))
    else:
        data = b"".join(z.compress(b"\0" + bytes(c for x in range(w) for c in pixel(x, y))) for y in range(h))
    data += z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", data) + chunk(b"IEND", b""))


def post_in_background(d, body, ctype, results, timeout=400):
    def run():
        t0 = time.monotonic()
        try:
            status, hdrs, data = d.request("POST", "/v1/classify", body, {"Content-Type": ctype}, timeout)
            results.append((status, hdrs, dm.parse_json(data), time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001 - recorded and checked by the caller
            results.append((type(e).__name__, {}, {}, time.monotonic() - t0))
    t = threading.Thread(target=run)
    t.start()
    return t


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def test_large_in_flight(effnetd, weights, workdir, big, small):
    body, ctype = dm.multipart([("black.png", "image/png", big)] * 32)
    d = dm.Daemon(effnetd, weights, workdir, "--max-request-pixels", 2000000000, "--deadline-ms", 20000,
                  "--access-log=false", name="large")
    try:
        status, _, _ = d.classify(small, "image/png")
        check(status == 200, "a small PNG is classified")
        results = []
        threads = [post_in_background(d, body, ctype, results) for _ in range(3)]
        deadline = time.monotonic() + 20
        while d.metrics().get("effnetd_decode_busy_threads", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        busy = d.metrics().get("effnetd_decode_busy_threads", 0)
        probes = []
        for _ in range(5):
            h, th = timed(lambda: dm.get_status(d.port, "/healthz", timeout=5))
            c, tc = timed(lambda: d.classify(small, "image/png", timeout=5)[0])
            probes.append((h, round(th, 2), c, round(tc, 2)))
            time.sleep(1)
        inflight = sum(1 for t in threads if t.is_alive())
        check(busy >= 1 and inflight == 3, f"3 requests of 32 6000x6000 PNGs decoding ({busy:.0f} threads busy, "
              f"{inflight} still in flight after the probes)")
        check(all(p[0] == 200 and p[1] < 1 and p[2] == 200 and p[3] < 1 for p in probes),
              f"meanwhile /healthz and a small classify on the main port answer within 1 s: {probes}")
        for t in threads:
            t.join(200)
        got = sorted(r[0] for r in results)
        check(len(results) == 3 and all(s in (200, 504) for s in got),
              f"the large requests are answered with their result or their deadline: {got}")
    finally:
        d.stop()


def test_queue_full(effnetd, weights, workdir, big):
    body, ctype = dm.multipart([("black.png", "image/png", big)] * 4)
    # A deadline long enough for 8 such images on one thread in the
    # sanitizer builds too.
    d = dm.Daemon(effnetd, weights, workdir, "--decode-threads", 1, "--decode-queue", 1,
                  "--max-request-pixels", 2000000000, "--deadline-ms", 300000, "--retry-after", 3,
                  "--access-log=false", name="queue-full")
    try:
        admitted = []
        threads = []
        for _ in range(2):
            threads.append(post_in_background(d, body, ctype, admitted))
            time.sleep(0.5)
        deadline = time.monotonic() + 20
        while d.metrics().get("effnetd_decode_queue_requests", 0) + \
                d.metrics().get("effnetd_decode_busy_threads", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, hdrs, answer = d.classify(body, ctype, timeout=30)
        err = answer.get("error", {})
        check(status == 503 and hdrs.get("retry-after") == "3" and err.get("code") == "overloaded"
              and "decode-queue" in err.get("message", ""),
              f"a third request while 2 are decoding (1 thread, queue 1): {status}, Retry-After "
              f"{hdrs.get('retry-after')}, {err}")
        check(d.metrics().get("effnetd_decode_rejected_total") == 1.0, "and it is counted")
        for t in threads:
            t.join(400)
        got = sorted(r[0] for r in admitted)
        check(got == [200, 200], f"the two admitted requests are classified: {got}")
        status, _, _ = d.classify(body, ctype, timeout=300)
        check(status == 200, f"once they are done a new request is decoded ({status})")
    finally:
        d.stop()


def test_warning_jpeg(effnetd, weights, workdir):
    photo = dm.sample_photos().get("grace_hopper.jpg")
    if not photo:
        print("     no sample photo: the warning JPEG not checked")
        return
    data = dm.read(photo)
    # Bytes between the entropy-coded data and EOI: libjpeg warns
    # ("extraneous bytes before marker 0xd9") and decodes.
    eoi = data.rindex(b"\xff\xd9")
    warned = data[:eoi] + b"\x00\x01\x02" + data[eoi:]
    d = dm.Daemon(effnetd, weights, workdir, name="warning-jpeg")
    try:
        s1, _, a1 = d.classify(data)
        s2, _, a2 = d.classify(warned)
        check(s1 == 200 and s2 == 200 and a1.get("predictions") == a2.get("predictions"),
              f"a JPEG with extraneous bytes before EOI is classified like the clean one ({s1}, {s2})")
    finally:
        d.stop()


def main():
    effnetd, effnet = dm.find_effnet_tools()
    with tempfile.TemporaryDirectory(prefix="effnetd-decode-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        big = png(6000, 6000)
        small = png(64, 48, lambda x, y: (x * 4, y * 5, (x * y) & 255))
        print(f"     one 6000x6000 black PNG: {len(big)} bytes")
        test_large_in_flight(effnetd, weights, workdir, big, small)
        test_queue_full(effnetd, weights, workdir, big)
        test_warning_jpeg(effnetd, weights, workdir)
    finish()


if __name__ == "__main__":
    main()
