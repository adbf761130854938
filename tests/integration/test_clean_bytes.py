#!/usr/bin/python3
"""Clean bytes: what clients send reaches answers and logs escaped, and bad
labels or weights give named errors.

Usage: test_clean_bytes.py EFFNETD EFFNET

The real daemon on loopback, with raw HTTP requests:
  - a path or media type that is not UTF-8 answers 404 / 415 with a JSON
    error, not 500;
  - a path with %0a cannot write a second (forged) log line, in text logs,
    and JSON logs keep every access line;
  - NUL in a path (%00) is 404, not the route before it;
  - a labels file that is not printable UTF-8, or holds a NUL, is refused
    at start-up with the line named;
  - weights that compute NaN give 500 non_finite_output (and its metric) in
    effnetd, and the same error from `effnet classify`; the daemon keeps
    answering;
  - one client address at its max-connections-per-client cannot take a
    connection from another address; listen [::] serves IPv4 and IPv6;
  - a request's pixels are budgeted over all its parts before decoding, and
    its deadline is checked between parts.
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402


def raw_get(d, target, extra=b""):
    """(status, parsed JSON body) of a GET sent byte for byte."""
    resp = dm.raw_http(d.port, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra +
                       b"\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, dm.parse_json(body)


def poison_classifier(src, dst):
    """A copy of a safetensors file whose classifier bias is all NaN."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    key = next(k for k in header if k.endswith("classifier.bias") or k == "classifier.1.bias")
    t = header[key]
    assert t["dtype"] == "F32", t
    begin, end = t["data_offsets"]
    base = 8 + n
    data[base + begin:base + end] = struct.pack("<f", float("nan")) * ((end - begin) // 4)
    with open(dst, "wb") as f:
        f.write(data)


def test_bytes(effnetd, weights, workdir):
    d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 1, name="text-log")
    try:
        s, b = raw_get(d, b"/%ff")
        msg = b.get("error", {}).get("message", "")
        check(s == 404 and b.get("error", {}).get("code") == "not_found" and "\\xff" in msg,
              f"GET /%ff: 404 with the byte escaped in the JSON message ({s} {b})")
        s, b = raw_get(d, b"/v2/models/%ff")
        check(s == 404 and "\\xff" in str(b.get("error")), f"GET /v2/models/%ff: 404 with the byte escaped ({s} {b})")
        s, b = raw_get(d, b"/\xc3(")
        check(s == 404 and "error" in b, f"GET of raw bytes that are not UTF-8: 404 JSON ({s})")
        s, b = raw_get(d, b"/a%0a<3>effnetd:%20forged")
        check(s == 404, f"GET /a%0a<3>...: 404 ({s})")
        s, b = raw_get(d, b"/healthz%00x")
        check(s == 404, f"GET /healthz%00x: 404, not /healthz ({s} {b})")
        s, b = raw_get(d, b"/healthz")
        check(s == 200, "GET /healthz still 200")
        resp = dm.raw_http(d.port, b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                           b"Content-Type: image/\xff\x01\r\nContent-Length: 4\r\n\r\nabcd")
        head, _, body = resp.partition(b"\r\n\r\n")
        b = dm.parse_json(body)
        check(head.startswith(b"HTTP/1.1 415") and b.get("error", {}).get("code") == "unsupported_media_type",
              f"a media type that is not UTF-8: 415 JSON ({head[:40]!r} {b})")
    finally:
        d.stop()
    lines = d.log_text().splitlines()
    forged = [line for line in lines if "forged" in line and not line.startswith("effnetd: access ")]
    access = [line for line in lines if "forged" in line]
    check(not forged and len(access) == 1 and "/a\\x0a<3>effnetd: forged" in access[0],
          f"the %0a path stays on its access line, escaped: {access} (other lines: {forged})")
    check(any("\\xff" in line and "404" in line for line in lines), "the /%ff access line, escaped")

    d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 1, "--log-format", "json", name="json-log")
    try:
        for target in (b"/%ff", b"/a%0a<3>x", b"/\xc3("):
            raw_get(d, target)
    finally:
        d.stop()
    records, bad = [], []
    for line in d.log_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            bad.append(line)
    paths = [r.get("path") for r in records if r.get("msg") == "access"]
    check(not bad and paths == ["/\\xff", "/a\\x0a<3>x", "/\\xc3("],
          f"JSON log: every line parses and no access line is dropped ({paths}, unparsed {bad[:2]})")


def test_labels(effnetd, weights, workdir):
    for name, content, want in (("latin1", "tabby\n" * 500 + "caf\xe9\n" + "x\n" * 499, ":501: byte 0xe9"),
                                ("nul", "a\x00b\n" + "x\n" * 999, "NUL byte at offset 1"),
                                ("control", "x\n" * 10 + "bell\x07\n" + "x\n" * 989, ":11: byte 0x07")):
        path = os.path.join(workdir, f"labels-{name}.txt")
        with open(path, "wb") as f:
            f.write(content.encode("latin-1"))
        p = subprocess.run([effnetd, "--weights", weights, "--listen", "127.0.0.1:0", "--labels", path],
                           capture_output=True, text=True, errors="replace", timeout=120)
        check(p.returncode != 0 and want in p.stderr and path in p.stderr,
              f"labels with {name} bytes refused at start-up ({p.returncode}: {p.stderr.strip()[-200:]})")


def test_non_finite(effnetd, effnet, weights, workdir):
    bad = os.path.join(workdir, "nan.safetensors")
    poison_classifier(weights, bad)
    photo = dm.sample_photos().get("grace_hopper.jpg")
    jpeg = dm.read(photo)
    d = dm.Daemon(effnetd, bad, workdir, "--max-batch", 1, name="nan")
    try:
        s, _, b = d.classify(jpeg)
        check(s == 500 and b.get("error", {}).get("code") == "non_finite_output"
              and "NaN or Inf" in b["error"].get("message", ""), f"NaN logits: 500 non_finite_output ({s} {b})")
        req = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                           "data": [0.0] * (3 * 224 * 224)}]}
        s, _, b = d.request("POST", "/v2/models/efficientnetv2-b0/infer", json.dumps(req).encode(),
                            {"Content-Type": "application/json"})
        b = dm.parse_json(b)
        check(s == 500 and "NaN or Inf" in str(b.get("error")), f"NaN logits on /v2 infer: 500 ({s} {b})")
        m = d.metrics()
        errors = {k: v for k, v in m.items() if k.startswith("effnetd_http_errors_total") and "non_finite" in k}
        check(sum(errors.values()) == 2.0, f"effnetd_http_errors_total counts non_finite_output: {errors}")
        s, _, b = d.request("GET", "/readyz")
        check(s == 200, "the daemon is still ready")
    finally:
        d.stop()
    p = subprocess.run([effnet, "classify", "--weights", bad, photo], capture_output=True, text=True, timeout=120)
    out = dm.parse_json(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "")
    check(p.returncode != 0 and out.get("error", {}).get("code") == "non_finite_output",
          f"effnet classify: the same error ({p.returncode} {p.stdout.strip()[:200]})")


def hold_connections(port, n):
    """n connections from 127.0.0.1 whose headers never end."""
    import socket
    held = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        held.append(c)
    time.sleep(0.3)
    return held


def test_global_cap(effnetd, weights, workdir):
    """Past max-connections a new connection is closed at once (not left in
    the kernel's backlog until the client gives up), counted, and once a
    held connection closes a new one is served again."""
    import socket
    d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 4, "--max-connections-per-client", 0,
                  name="global-cap")
    held = []
    try:
        held = hold_connections(d.port, 4)
        t0 = time.monotonic()
        extra = socket.create_connection(("127.0.0.1", d.port), timeout=2)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        except socket.timeout:
            answer = None
        took = time.monotonic() - t0
        extra.close()
        check(answer == b"", f"a 5th connection past max-connections 4 is closed at once ({answer!r}, {took:.2f} s)")
        for c in held:
            c.close()
        held = []
        time.sleep(0.3)
        status, _, _ = d.request("GET", "/healthz")
        refused = d.metrics().get("effnetd_http_connections_refused_total", 0)
        check(status == 200 and refused >= 1,
              f"served again once the held ones closed ({status}); refused counted ({refused:.0f})")
    finally:
        for c in held:
            c.close()
        d.stop()


def test_connections(effnetd, weights, workdir):
    """One client address holding its whole per-client allowance of idle
    connections does not starve another address; [::] takes IPv4 too."""
    import socket
    d = dm.Daemon(effnetd, weights, workdir, "--max-connections-per-client", 4,
                  name="per-client")
    held = []
    try:
        held = hold_connections(d.port, 4)
        extra = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        try:
            refused = extra.recv(100) == b""
        except (ConnectionResetError, socket.timeout):
            refused = True
        extra.close()
        other = socket.create_connection(("127.0.0.1", d.port), timeout=10, source_address=("127.0.0.2", 0))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = other.recv(100)
        other.close()
        check(refused and answer.startswith(b"HTTP/1.1 200"),
              f"4 connections from 127.0.0.1: a 5th is refused, 127.0.0.2 still gets /healthz ({answer[:20]!r})")
    finally:
        for c in held:
            c.close()
        d.stop()
    if not os.path.exists("/proc/net/if_inet6"):
        print("     no IPv6 here: dual stack not checked")
        return
    d = dm.Daemon(effnetd, weights, workdir, "--listen", "[::]:0", name="dual-stack", wait=False)
    try:
        deadline = time.monotonic() + 120
        while "listening on" not in d.log_text() and time.monotonic() < deadline and d.proc.poll() is None:
            time.sleep(0.05)
        m = re.search(r"listening on http://\[::\]:(\d+)", d.log_text())
        port = int(m.group(1)) if m else 0
        v4 = dm.raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") if port else b""
        c6 = socket.create_connection(("::1", port), timeout=10) if port else None
        if c6:
            c6.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            v6 = c6.recv(100)
            c6.close()
        else:
            v6 = b""
        check(v4.startswith(b"HTTP/1.1 200") and v6.startswith(b"HTTP/1.1 200"),
              f"listen [::]: IPv4 and IPv6 clients both answered ({v4[:15]!r}, {v6[:15]!r})")
    finally:
        d.stop()


def flat_png(side):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def test_decoding_budget(effnetd, weights, workdir):
    """Large images that compress to almost nothing: the request's pixel
    budget is summed over its parts before decoding them, and the deadline
    is checked between parts."""
    try:
        big = flat_png(4000)   # 16 Mpx, about 50 kB
    except ImportError:
        print("     no PIL: decoding budget not checked")
        return
    body, ctype = dm.multipart([("big.png", "image/png", big)] * 6)
    d = dm.Daemon(effnetd, weights, workdir, "--max-request-pixels", 40000000, name="pixels")
    try:
        t0 = time.monotonic()
        s, _, b = d.request("POST", "/v1/classify", body, {"Content-Type": ctype})
        secs = time.monotonic() - t0
        b = dm.parse_json(b)
        check(s == 413 and "max-request-pixels" in b.get("error", {}).get("message", ""),
              f"6 x 16 Mpx in one request, budget 40 Mpx: 413 after {secs:.2f} s ({s} {b})")
    finally:
        d.stop()
    d = dm.Daemon(effnetd, weights, workdir, "--deadline-ms", 30, name="decode-deadline")
    try:
        s, _, b = d.request("POST", "/v1/classify", body, {"Content-Type": ctype})
        msg = dm.parse_json(b).get("error", {}).get("message", "")
        check(s == 504 and "while decoding image" in msg and "image 6" not in msg,
              f"a 30 ms deadline stops decoding between parts: {s} {msg}")
    finally:
        d.stop()


def main():
    effnetd, effnet = dm.find_effnet_tools()
    if "grace_hopper.jpg" not in dm.sample_photos():
        sys.stderr.write("SKIP: sample photos missing (python3-matplotlib)\n")
        sys.exit(dm.SKIP)
    with tempfile.TemporaryDirectory(prefix="effnetd-bytes-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        test_bytes(effnetd, weights, workdir)
        test_labels(effnetd, weights, workdir)
        test_non_finite(effnetd, effnet, weights, workdir)
        test_connections(effnetd, weights, workdir)
        test_global_cap(effnetd, weights, workdir)
        test_decoding_budget(effnetd, weights, workdir)
    finish()


if __name__ == "__main__":
    main()
