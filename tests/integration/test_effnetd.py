#!/usr/bin/python3
"""Integration test of effnetd: starts the real daemon on loopback ports with
seeded B0 weights (`effnet init-weights`) and talks HTTP to it with
http.client, raw sockets and curl. Covers every endpoint, every status code
of docs/openapi.yaml, multipart, top_k bounds, 64 concurrent clients,
batching, limits, overload, deadlines, labels, graceful shutdown, and
`effnet classify` printing the server's JSON.

Usage: test_effnetd.py EFFNETD EFFNET   (meson passes both)
"""

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, failures, finish  # noqa: E402

try:
    from PIL import Image
except ImportError:
    sys.stderr.write("SKIP: needs python3-pil (run with /usr/bin/python3)\n")
    sys.exit(dm.SKIP)

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = os.path.join(SOURCE_ROOT, "etc", "labels", "imagenet-1k.txt")



def check_error(status, body, want_status, want_code, what):
    err = body.get("error") if isinstance(body, dict) else None
    ok = (status == want_status and isinstance(err, dict) and err.get("code") == want_code
          and isinstance(err.get("message"), str) and err["message"] != "")
    return check(ok, f"{what}: {want_status} {want_code} (got {status} {json.dumps(body)[:160]})")


def check_predictions(preds, k, labels, what):
    ok = isinstance(preds, list) and len(preds) == k
    if ok:
        scores = [p.get("score") for p in preds]
        ok = (all(set(p) == {"index", "label", "score"} for p in preds)
              and all(isinstance(p["index"], int) and 0 <= p["index"] < len(labels) for p in preds)
              and all(p["label"] == labels[p["index"]] for p in preds)
              and all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
              and scores == sorted(scores, reverse=True)
              and len({p["index"] for p in preds}) == k)
    return check(ok, f"{what}: {k} predictions, sorted, labels match indices")


def same_answer(a, b, tol=2e-3):
    """Same top-k classes in the same order and scores within tol."""
    if len(a) != len(b):
        return False
    return all(x["index"] == y["index"] and abs(x["score"] - y["score"]) <= tol for x, y in zip(a, b))


def png_header(width, height):
    """A PNG whose IHDR claims width x height (the pixel data is tiny)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_header(width, height):
    """A baseline JPEG header whose SOF0 claims width x height, up to its
    first scan (no tables, no data: a header reader stops at SOS)."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
            + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos + b"\x00" * 64 + b"\xff\xd9")


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def distinct_images(photos, n):
    """n different images (crops of real photos), JPEG and PNG."""
    srcs = [Image.open(p).convert("RGB") for p in sorted(photos.values())]
    out = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        f = 0.5 + 0.4 * ((i * 7) % 11) / 10
        cw, ch = int(w * f), int(h * f)
        x = (i * 37) % max(1, w - cw)
        y = (i * 53) % max(1, h - ch)
        crop = im.crop((x, y, x + cw, y + ch)).resize((160 + (i % 5) * 40, 160 + (i % 3) * 50))
        out.append(encode(crop, "JPEG", quality=85) if i % 2 == 0 else encode(crop, "PNG"))
    return out


def parallel(fn, args, barrier=True):
    """Runs fn(*a) for every a in its own thread, all released at once."""
    results = [None] * len(args)
    gate = threading.Barrier(len(args)) if barrier else None

    def run(i, a):
        try:
            if gate:
                gate.wait()
            results[i] = fn(*a)
        except Exception as e:  # reported by the caller
            results[i] = e
    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_endpoints(d, labels, jpeg, png):
    s, h, b = d.request("GET", "/healthz")
    check(s == 200 and dm.parse_json(b) == {"status": "ok"}, "GET /healthz 200")
    s, h, b = d.request("HEAD", "/healthz")
    check(s == 200 and b == b"", "HEAD /healthz 200 without a body")
    s, h, b = d.request("GET", "/readyz")
    check(s == 200 and dm.parse_json(b) == {"status": "ready"}, "GET /readyz 200")
    s, h, b = d.request("GET", "/v1/models")
    models = dm.parse_json(b).get("models", [{}])
    m = models[0] if models else {}
    check(s == 200 and h.get("content-type") == "application/json", "GET /v1/models 200 JSON")
    check(m.get("variant") == "efficientnetv2-b0" and m.get("input_size") == 224 and m.get("classes") == 1000
          and m.get("precision") == "fp32" and m.get("weights", {}).get("file") == "b0.safetensors"
          and "path" not in m["weights"]
          and m["weights"].get("source") == "seeded" and m["weights"].get("trained") is False
          and len(m["weights"].get("sha256", "")) == 64
          and m.get("labels") == {"source": "builtin-imagenet-1k", "count": 1000}, f"/v1/models describes the model: {m}")
    bt = m.get("batching", {})
    check(bt.get("max_batch_size") == 8 and bt.get("workers") == 1 and "max_queue_delay_ms" in bt
          and bt.get("executor_batch_sizes") == [1, 2, 4, 8], f"/v1/models shows batching: {bt}")
    s, h, b = d.request("GET", "/metrics")
    check(s == 200 and h.get("content-type", "").startswith("text/plain")
          and b"# TYPE effnetd_http_requests_total counter" in b, "GET /metrics Prometheus text")

    s, h, body = d.classify(jpeg, "image/jpeg")
    check(s == 200 and h.get("content-type") == "application/json" and set(body) == {"model", "predictions"}
          and body["model"] == "efficientnetv2-b0", f"POST /v1/classify JPEG 200 (got {s} {str(body)[:120]})")
    check_predictions(body.get("predictions"), 5, labels, "JPEG")
    ref = body.get("predictions")
    s, _, body = d.classify(png, "image/png")
    check(s == 200, "POST /v1/classify PNG 200")
    check_predictions(body.get("predictions"), 5, labels, "PNG")
    s, _, b2 = d.classify(jpeg, "application/octet-stream")
    check(s == 200 and same_answer(b2.get("predictions", []), ref, 1e-6), "application/octet-stream 200")
    s, _, b2 = d.classify(jpeg, None)
    check(s == 200 and same_answer(b2.get("predictions", []), ref, 1e-6), "no Content-Type: sniffed, 200")
    s, _, b2 = d.classify(jpeg, "image/png")
    check(s == 200 and same_answer(b2.get("predictions", []), ref, 1e-6),
          "JPEG bytes labelled image/png: sniffed from the bytes, 200")
    s, _, b2 = d.classify(jpeg, "IMAGE/JPEG; charset=binary")
    check(s == 200, "media type case-insensitive, parameters ignored")
    return ref


def test_top_k(d, labels, jpeg):
    for k in (1, 3, 1000):
        s, _, body = d.classify(jpeg, query=f"?top_k={k}")
        check(s == 200, f"top_k={k} 200")
        check_predictions(body.get("predictions"), k, labels, f"top_k={k}")
    for bad in ("0", "1001", "-1", "abc", "2.5", "", "5x", "99999999999999999999", "+3", "%20"):
        s, _, body = d.classify(jpeg, query=f"?top_k={bad}")
        check_error(s, body, 400, "invalid_argument", f"top_k={bad!r}")


def test_multipart(d, labels, images, singles):
    parts = [(f"img{i}", dm.content_type_of(b), b) for i, b in enumerate(images)]
    body, ctype = dm.multipart(parts)
    s, _, ans = d.classify(body, ctype, query="?top_k=3")
    results = ans.get("results") if isinstance(ans, dict) else None
    check(s == 200 and set(ans) == {"model", "results"} and isinstance(results, list)
          and len(results) == len(images), f"multipart with {len(images)} parts: 200, results")
    if results and len(results) == len(images):
        ok = all(set(r) == {"predictions"} and same_answer(r["predictions"], singles[i][:3])
                 for i, r in enumerate(results))
        check(ok, "multipart results in part order, equal to single requests")
        for r in results:
            check_predictions(r.get("predictions"), 3, labels, "multipart part")
    # One part: still the "results" shape.
    body, ctype = dm.multipart(parts[:1])
    s, _, ans = d.classify(body, ctype)
    check(s == 200 and len(ans.get("results", [])) == 1, "multipart with one part: results of 1")
    # A preamble, a quoted boundary and transport padding are fine.
    body, ctype = dm.multipart(parts[:2], boundary="b0und4ry")
    body = b"preamble text\r\n" + body.replace(b"--b0und4ry\r\n", b"--b0und4ry  \r\n", 1)
    s, _, ans = d.classify(body, 'multipart/form-data; boundary="b0und4ry"')
    check(s == 200 and len(ans.get("results", [])) == 2, "multipart with preamble, quoted boundary, padding")


def test_bad_input(d, jpeg, png):
    def post(data, ctype="image/jpeg", query=""):
        return d.classify(data, ctype, query)

    s, _, b = post(b"")
    check_error(s, b, 400, "invalid_image", "empty body")
    s, _, b = post(jpeg[: len(jpeg) // 2])
    check_error(s, b, 400, "invalid_image", "truncated JPEG")
    s, _, b = post(jpeg[:2] + bytes((i * 97) % 256 for i in range(600)) + jpeg[602:])
    check_error(s, b, 400, "invalid_image", "corrupt JPEG (garbage headers)")
    s, _, b = post(png[: len(png) // 2], "image/png")
    check_error(s, b, 400, "invalid_image", "truncated PNG")
    idat = png.find(b"IDAT")
    bad = bytearray(png)
    for i in range(idat + 8, min(idat + 200, len(bad) - 12)):
        bad[i] ^= 0x5A
    s, _, b = post(bytes(bad), "image/png")
    check_error(s, b, 400, "invalid_image", "corrupt PNG (damaged IDAT)")
    s, _, b = post(b"this is not an image at all, just some text\n" * 10, "application/octet-stream")
    check_error(s, b, 400, "invalid_image", "a non-image")
    s, _, b = post(b"\xff\xd8\xff")
    check_error(s, b, 400, "invalid_image", "a JPEG signature and nothing else")
    s, _, b = post(b"GIF89a" + b"\0" * 100, "application/octet-stream")
    check_error(s, b, 400, "invalid_image", "a GIF (unsupported format)")

    # Broken multipart.
    body, ctype = dm.multipart([("a.jpg", "image/jpeg", jpeg)])
    s, _, b = post(body, "multipart/form-data")
    check_error(s, b, 400, "invalid_multipart", "multipart without a boundary parameter")
    s, _, b = post(body[: len(body) // 2], ctype)
    check_error(s, b, 400, "invalid_multipart", "multipart without its closing boundary")
    s, _, b = post(b"no delimiters here", ctype)
    check_error(s, b, 400, "invalid_multipart", "multipart without any delimiter")
    boundary = ctype.split("=", 1)[1]
    s, _, b = post(f"--{boundary}\r\nContent-Type: image/jpeg\r\n".encode() + jpeg, ctype)
    check_error(s, b, 400, "invalid_multipart", "multipart part without a blank line")
    s, _, b = post(f"--{boundary}--\r\n".encode(), ctype)
    check_error(s, b, 400, "invalid_multipart", "multipart with no parts")
    body2, _ = dm.multipart([("a.jpg", "image/jpeg", jpeg), ("b.txt", "text/plain", b"hello")], boundary)
    s, _, b = post(body2, ctype)
    check_error(s, b, 400, "invalid_image", "multipart with a non-image part")
    check("part 2" in b.get("error", {}).get("message", ""), "the error names the bad part")

    # Unknown paths and wrong methods.
    for method, path in (("GET", "/ui/"), ("GET", "/index.html"), ("GET", "/v1"), ("POST", "/v1/classify/x"), ("GET", "/v2x"),
                         ("DELETE", "/nothing"), ("GET", "/healthz/"), ("GET", "/V1/MODELS")):
        s, _, b = d.request(method, path)
        check_error(s, dm.parse_json(b), 404, "not_found", f"{method} {path}")
    for method, path, allow in (("GET", "/v1/classify", "POST"), ("PUT", "/v1/classify", "POST"),
                                ("DELETE", "/v1/classify", "POST"), ("POST", "/healthz", "GET, HEAD"),
                                ("POST", "/v1/models", "GET, HEAD"), ("PUT", "/metrics", "GET, HEAD"),
                                ("DELETE", "/readyz", "GET, HEAD")):
        s, h, b = d.request(method, path, body=b"" if method in ("POST", "PUT") else None)
        check_error(s, dm.parse_json(b), 405, "method_not_allowed", f"{method} {path}")
        check(h.get("allow") == allow, f"{method} {path}: Allow: {allow} (got {h.get('allow')})")

    # Unsupported media types.
    for ctype in ("text/plain", "application/json", "image/gif", "application/x-www-form-urlencoded",
                  "image/jpegx"):
        s, _, b = post(jpeg, ctype)
        check_error(s, b, 415, "unsupported_media_type", f"Content-Type {ctype}")

    # 413: the announced length alone is enough; nothing else is read.
    ans = dm.raw_http(d.port, b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                              b"Content-Length: 20000000\r\n\r\n", timeout=10, read_all=True)
    head, _, rest = ans.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 413") and b"payload_too_large" in rest,
          f"Content-Length of 20 MB: 413 before any body byte (got {head[:40]!r})")
    # curl sends the 20 MB body with Expect: 100-continue.
    with tempfile.NamedTemporaryFile(suffix=".bin") as big:
        big.write(b"\0" * 20_000_000)
        big.flush()
        if shutil.which("curl"):
            r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: image/jpeg",
                                "--data-binary", "@" + big.name, f"http://127.0.0.1:{d.port}/v1/classify"],
                               stdout=subprocess.PIPE, timeout=60)
            out = r.stdout.decode(errors="replace")
            check(out.endswith("\n413") and "payload_too_large" in out, f"curl 20 MB body: 413 ({out[-80:]!r})")
    # A chunked body has no length: 413 once it grows past the limit.
    c = d.conn()
    c.putrequest("POST", "/v1/classify")
    c.putheader("Content-Type", "image/jpeg")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    chunk = b"\0" * (1 << 20)
    try:
        for _ in range(11):
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        s, b = r.status, dm.parse_json(r.read())
    except OSError as e:
        s, b = None, {"exception": str(e)}
    c.close()
    check_error(s, b, 413, "payload_too_large", "chunked body of 11 MiB (limit 10 MiB)")
    # Pixel limits from the header, before any decoding.
    s, _, b = post(png_header(30000, 30000), "image/png")
    check_error(s, b, 413, "payload_too_large", "PNG header of 30000x30000")
    s, _, b = post(jpeg_header(30000, 30000), "image/jpeg")
    check_error(s, b, 413, "payload_too_large", "JPEG header of 30000x30000")
    s, _, b = post(png_header(10000, 10000), "image/png")
    check_error(s, b, 413, "payload_too_large", "PNG header of 10000x10000 (100 Mpixel > --max-pixels)")

    # Malformed HTTP does not hurt the server.
    dm.raw_http(d.port, b"\x00\x01garbage\r\n\r\n", timeout=5)
    dm.raw_http(d.port, b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nshort",
                timeout=2)


def test_concurrency(d, images, singles):
    def one(i):
        s, _, body = d.classify(images[i], dm.content_type_of(images[i]))
        return s, body

    before = d.metrics()
    results = parallel(one, [(i,) for i in range(len(images))])
    statuses = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
    check(all(s == 200 for s in statuses), f"{len(images)} concurrent clients all answered 200 ({statuses})")
    ok = [isinstance(r, tuple) and r[0] == 200 and same_answer(r[1].get("predictions", []), singles[i])
          for i, r in enumerate(results)]
    check(all(ok), f"each concurrent client got the answer for its own image "
                   f"({sum(ok)}/{len(ok)} match the single requests)")
    distinct = {tuple((p["index"], round(p["score"], 3)) for p in s) for s in singles}
    check(len(distinct) >= len(singles) // 2,
          f"the images give different answers ({len(distinct)} distinct of {len(singles)})")
    after = d.metrics()
    batches = after["effnetd_batches_total"] - before["effnetd_batches_total"]
    images_n = after["effnetd_batch_images_total"] - before["effnetd_batch_images_total"]
    single = after['effnetd_batch_size_bucket{le="1"}'] - before['effnetd_batch_size_bucket{le="1"}']
    check(images_n == len(images) and batches < len(images) and single < batches,
          f"batches of more than one image formed: {images_n:.0f} images in {batches:.0f} passes, "
          f"{single:.0f} of one image")
    check(after["effnetd_images_total"] - before["effnetd_images_total"] == len(images),
          "effnetd_images_total counts them")


def test_cli(effnet, weights, workdir, jpeg_path, server_answer):
    r = subprocess.run([effnet, "classify", "--weights", weights, jpeg_path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    lines = r.stdout.decode().splitlines()
    ans = dm.parse_json(lines[0].encode()) if lines else {}
    check(r.returncode == 0 and set(ans) == {"model", "predictions"}
          and same_answer(ans["predictions"], server_answer, 1e-5),
          f"effnet classify prints the server's JSON (rc {r.returncode}, {r.stderr.decode()[-200:]})")
    bad = os.path.join(workdir, "not-an-image.txt")
    with open(bad, "w") as f:
        f.write("hello\n")
    r = subprocess.run([effnet, "classify", "--weights", weights, "--top-k", "2", jpeg_path, bad],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    lines = [dm.parse_json(x.encode()) for x in r.stdout.decode().splitlines()]
    check(r.returncode == 1 and len(lines) == 2 and len(lines[0].get("predictions", [])) == 2
          and lines[1].get("error", {}).get("code") == "invalid_image",
          f"effnet classify: one line per file, the error JSON for a non-image, exit 1 ({lines})")


def test_overload(effnetd, weights, workdir, jpeg):
    """503 + Retry-After with a tiny queue; 413 for too many images."""
    # One decoding thread and one waiting request as well: whichever stage
    # is the slower here (under a sanitizer, our preprocessing is), its
    # queue is the one that fills.
    d = dm.Daemon(effnetd, weights, workdir, "--queue", 2, "--max-images", 2, "--max-batch", 1,
                  "--max-delay-ms", 0, "--retry-after", 3, "--connection-timeout", 1,
                  "--decode-threads", 1, "--decode-queue", 1, name="effnetd-small")
    try:
        def one():
            return d.classify(jpeg, "image/jpeg")
        results = parallel(one, [()] * 24)
        statuses = sorted(r[0] if isinstance(r, tuple) else repr(r) for r in results)
        busy = [r for r in results if isinstance(r, tuple) and r[0] == 503]
        check(set(statuses) <= {200, 503} and statuses.count(200) >= 1 and busy,
              f"24 clients on a queue of 2: 200s and 503s ({statuses})")
        if busy:
            s, h, b = busy[0]
            check_error(s, b, 503, "overloaded", "queue full")
            check(h.get("retry-after") == "3", f"503 carries Retry-After: 3 (got {h.get('retry-after')})")
        m = d.metrics()
        check(m["effnetd_batch_jobs_rejected_total"] + m['effnetd_http_errors_total{code="overloaded"}'] >= 1,
              "rejections are counted")
        body, ctype = dm.multipart([("a.jpg", "image/jpeg", jpeg)] * 3)
        s, _, b = d.classify(body, ctype)
        check_error(s, b, 413, "payload_too_large", "3 images with --max-images 2")
        # A client that stalls in its headers is dropped after the timeout.
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\n")
        t0 = time.monotonic()
        try:
            closed = sock.recv(100) == b""
        except OSError:
            closed = True
        waited = time.monotonic() - t0
        sock.close()
        check(closed and waited < 8, f"a stalled client is dropped after --connection-timeout ({waited:.1f} s)")
        s, _, b = d.classify(jpeg, "image/jpeg")
        check(s == 200, "the small server still answers afterwards")
    finally:
        check(d.stop() == 0, "small server exits 0 on SIGTERM")


def test_deadline(effnetd, weights, workdir, jpeg):
    """504 when requests wait past --deadline-ms."""
    d = dm.Daemon(effnetd, weights, workdir, "--deadline-ms", 30, "--max-batch", 1, "--max-delay-ms", 0,
                  "--queue", 64, name="effnetd-deadline")
    try:
        results = parallel(lambda: d.classify(jpeg, "image/jpeg"), [()] * 16)
        statuses = sorted(r[0] if isinstance(r, tuple) else repr(r) for r in results)
        late = [r for r in results if isinstance(r, tuple) and r[0] == 504]
        check(set(statuses) <= {200, 504} and late, f"16 clients with a 30 ms deadline: 504s ({statuses})")
        if late:
            check_error(late[0][0], late[0][2], 504, "deadline_exceeded", "deadline")
        s, _, b = d.request("GET", "/readyz")
        check(s == 200, "the deadline server is still ready")
    finally:
        check(d.stop() == 0, "deadline server exits 0 on SIGTERM")


def test_labels(effnetd, effnet, weights, workdir, jpeg):
    # A file with the wrong line count is a start-up error.
    short = os.path.join(workdir, "short-labels.txt")
    with open(short, "w") as f:
        f.write("".join(f"c{i}\n" for i in range(999)))
    d = dm.Daemon(effnetd, weights, workdir, "--labels", short, name="effnetd-badlabels", wait=False)
    try:
        rc = d.proc.wait(300)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        rc = None
    check(rc not in (0, None) and "999 lines but the model has 1000 classes" in d.log_text(),
          f"labels with 999 lines: start-up error (rc {rc}): {d.log_text()[-200:]}")
    # The same setting from the environment.
    custom = os.path.join(workdir, "custom-labels.txt")
    with open(custom, "w") as f:
        f.write("".join(f"class-{i}\r\n" for i in range(1000)))
    d = dm.Daemon(effnetd, weights, workdir, name="effnetd-labels", env={"EFFNETD_LABELS": custom})
    try:
        s, _, b = d.classify(jpeg)
        preds = b.get("predictions", [])
        check(s == 200 and preds and all(p["label"] == f"class-{p['index']}" for p in preds),
              "EFFNETD_LABELS: labels from the file (CRLF lines)")
    finally:
        check(d.stop() == 0, "labels server exits 0")
    # No labels for a 10-class model: the index as a string.
    w10 = os.path.join(workdir, "b0-10.safetensors")
    subprocess.run([effnet, "init-weights", "--variant", "b0", "--classes", "10", "--seed", "2", "-o", w10],
                   check=True, timeout=600)
    # Also two workers of one thread each, and the fast JPEG path.
    d = dm.Daemon(effnetd, w10, workdir, "--max-batch", 2, "--workers", 2, "--threads", 1, "--jpeg-fast",
                  name="effnetd-10")
    try:
        s, _, b = d.classify(jpeg, query="?top_k=10")
        preds = b.get("predictions", [])
        check(s == 200 and len(preds) == 10 and all(p["label"] == str(p["index"]) for p in preds),
              "10-class model without labels: label is the index")
        s, _, b = d.request("GET", "/v1/models")
        bt = dm.parse_json(b).get("models", [{}])[0].get("batching", {})
        check(bt.get("workers") == 2 and bt.get("threads_per_worker") == 1, f"two workers of one thread: {bt}")
        results = parallel(lambda: d.classify(jpeg, query="?top_k=10"), [()] * 8)
        check(all(isinstance(r, tuple) and r[0] == 200 and same_answer(r[2]["predictions"], preds)
                  for r in results), "two workers answer 8 concurrent requests alike")
        s, _, b = d.classify(jpeg, query="?top_k=11")
        check_error(s, b, 400, "invalid_argument", "top_k=11 on a 10-class model")
    finally:
        check(d.stop() == 0, "10-class server exits 0")


def test_drain(d, jpeg):
    """SIGTERM: requests in flight finish, then exit 0."""
    def one():
        return d.classify(jpeg, "image/jpeg")
    results = [None] * 6
    threads = []
    for i in range(6):
        t = threading.Thread(target=lambda i=i: results.__setitem__(i, one()))
        t.start()
        threads.append(t)
    time.sleep(0.05)
    d.proc.send_signal(15)
    for t in threads:
        t.join()
    rc = d.proc.wait(120)
    statuses = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
    check(all(s in (200, 503) for s in statuses) and 200 in statuses,
          f"requests in flight at SIGTERM are answered ({statuses})")
    check(rc == 0 and "draining" in d.log_text() and "stopped" in d.log_text(), f"exit 0 after draining (rc {rc})")
    try:
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    check(refused, "no longer listening after exit")


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos or len(photos) < 3:
        sys.stderr.write("SKIP: sample photos missing (python3-matplotlib, python3-skimage)\n")
        sys.exit(dm.SKIP)
    with open(LABELS) as f:
        labels = f.read().splitlines()
    check(len(labels) == 1000, "etc/labels/imagenet-1k.txt has 1000 lines")

    with tempfile.TemporaryDirectory(prefix="effnetd-test-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        jpeg_path = photos["grace_hopper.jpg"]
        jpeg = dm.read(jpeg_path)
        png = dm.read(photos.get("chelsea.png") or next(p for n, p in photos.items() if n.endswith(".png")))
        images = distinct_images(photos, 64)

        d = dm.Daemon(effnetd, weights, workdir, "--max-delay-ms", 20)
        try:
            ref = test_endpoints(d, labels, jpeg, png)
            singles = []
            for img in images:
                s, _, body = d.classify(img, dm.content_type_of(img))
                singles.append(body.get("predictions", []) if s == 200 else [])
            check(all(singles), "every test image classified alone")
            test_top_k(d, labels, jpeg)
            test_multipart(d, labels, images[:5], singles[:5])
            test_bad_input(d, jpeg, png)
            test_concurrency(d, images, singles)
            s, _, b = d.request("GET", "/readyz")
            check(s == 200, "after all the bad input: /readyz 200")
            s, _, body = d.classify(jpeg)
            check(s == 200 and same_answer(body.get("predictions", []), ref, 1e-6),
                  "after all the bad input: a valid request gets the same answer")
            m = d.metrics()
            check(m.get('effnetd_http_requests_total{protocol="v1",route="/v1/classify",code="200"}', 0) > 64
                  and m.get('effnetd_http_requests_total{protocol="v1",route="/v1/classify",code="400"}', 0) > 5
                  and m.get('effnetd_http_errors_total{code="payload_too_large"}', 0) >= 5
                  and m.get('effnetd_http_requests_total{protocol="v1",route="other",code="404"}', 0) >= 5,
                  "metrics count requests by route and status, and errors by code")
            test_cli(effnet, weights, workdir, jpeg_path, ref)
            test_drain(d, jpeg)
        finally:
            if d.proc.poll() is None:
                d.stop()
            if failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-4000:])
        test_overload(effnetd, weights, workdir, jpeg)
        test_deadline(effnetd, weights, workdir, jpeg)
        test_labels(effnetd, effnet, weights, workdir, jpeg)

    finish()


if __name__ == "__main__":
    main()
