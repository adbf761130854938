#!/usr/bin/python3
"""Clients that stall: what they may and may not hold.

Usage: test_stalls.py EFFNETD EFFNET

  - a client that never reads its answers (pipelined GET /metrics, or
    requests refused after their body with an early error) holds no model
    generation: after a SIGHUP reload the replaced model is released while
    that client still sits on its unread answers;
  - with connection-timeout = 0 (and with header-timeout = 0 too) a body
    that stops arriving is cut at body-timeout, counted in /metrics; a
    kept-alive connection idle after a complete request is not;
  - a request without top_k whose body arrives across a reload to a model
    of 3 classes gets the default top_k of the model that serves it (3
    predictions), not a 400 from the default of the old model (5).
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402


def read_answer(c):
    """One answer (status line, headers, Content-Length bytes of body) from
    socket c; what came when it closes early."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        chunk = c.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def reloads_ok(d):
    return d.metrics().get('effnetd_reloads_total{result="ok"}', 0)


def reload_to(d, conf, weights, n):
    """Points the config file at weights, SIGHUP; whether reload n is done."""
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {weights}\n")
    d.proc.send_signal(signal.SIGHUP)
    return dm.wait_until(lambda: reloads_ok(d) >= n, 120, 0.2)


def stalled_reader(port, requests):
    """A connection that sends requests (from a thread: the server stops
    reading while its answers wait) and never reads. Its small receive
    window and segment size keep the server's socket buffer small too (on
    loopback, with 64 KB segments, it would take a few MB at once), so that
    an answer of some 30 KB stays partly in the server."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.connect(("127.0.0.1", port))

    def send():
        try:
            s.sendall(requests)
        except OSError:
            pass
    t = threading.Thread(target=send, daemon=True)
    t.start()
    return s


def test_slow_readers(effnetd, seeds, workdir):
    conf = os.path.join(workdir, "readers.conf")
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {seeds[0]}\n")
    # Idle connections are not dropped here: the readers stay for the test.
    d = dm.Daemon(effnetd, None, workdir, "--config", conf, "--connection-timeout", 600, name="readers")
    readers = []
    try:
        kinds = [
            # An answer of some 30 KB, answered at its headers (libmicrohttpd
            # then closes the connection: no pipelining).
            ("GET /metrics answer", b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            # Pipelined, each refused once its body is in (multipart
            # without a boundary): their answers fill the buffers.
            ("early errors", b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data\r\n"
                             b"Content-Length: 3\r\n\r\nabc" * 5000),
        ]
        for i, (what, requests) in enumerate(kinds, 1):
            readers.append(stalled_reader(d.port, requests))
            held = dm.wait_until(lambda: d.metrics().get("effnetd_http_answer_bytes", 0) > 0, 10)
            check(held, f"the server holds an unread answer of a client that does not read its {what}")
            ok = reload_to(d, conf, seeds[i], i)
            retired = dm.wait_until(lambda: d.metrics().get("effnetd_retired_models") == 0, 10)
            released = d.log_text().count("released the replaced model")
            check(ok and retired and released == i,
                  f"a client that does not read its {what}: reload {i} done ({ok}), the replaced model released "
                  f"while it still waits ({released} released, retired gauge "
                  f"{d.metrics().get('effnetd_retired_models')})")
        check(dm.get_status(d.port, "/healthz") == 200, "the server answers others meanwhile")
    finally:
        for r in readers:
            r.close()
        d.stop()


def test_stalled_body(effnetd, weights, workdir, image):
    for header_timeout in (10, 0):
        d = dm.Daemon(effnetd, weights, workdir, "--connection-timeout", 0, "--body-timeout", 2,
                      "--header-timeout", header_timeout, name=f"stalled-body-{header_timeout}")
        try:
            c = socket.create_connection(("127.0.0.1", d.port), timeout=15)
            c.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8" + b"\0" * 1000)
            t0 = time.monotonic()
            try:
                got = c.recv(65536)
            except socket.timeout:
                got = None
            except ConnectionResetError:
                got = b""
            secs = time.monotonic() - t0
            c.close()
            check(got is not None and not got.startswith(b"HTTP/1.1 200") and 1.5 < secs < 8,
                  f"connection-timeout 0, header-timeout {header_timeout}: a body that stops is cut at "
                  f"body-timeout 2 s (after {secs:.1f} s, {got[:30] if got is not None else 'still open'!r})")
            check(d.metrics().get("effnetd_http_body_timeouts_total") == 1, "and counted as a body timeout")

            # A complete request, then a kept-alive connection left idle
            # past body-timeout: nothing is due, it still serves.
            if image:
                c = socket.create_connection(("127.0.0.1", d.port), timeout=30)
                c.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                          f"Content-Length: {len(image)}\r\n\r\n".encode() + image)
                first = read_answer(c)
                time.sleep(4)
                try:
                    c.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    second = read_answer(c)
                except OSError as e:
                    second = repr(e).encode()
                c.close()
                check(first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200"),
                      f"a kept-alive connection idle past body-timeout after a whole body is not cut "
                      f"({first[:15]!r}, {second[:15]!r})")
        finally:
            d.stop()


def test_default_top_k_after_reload(effnetd, weights, three, workdir, image):
    conf = os.path.join(workdir, "top-k.conf")
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {weights}\n")
    d = dm.Daemon(effnetd, None, workdir, "--config", conf, "--connection-timeout", 300, "--body-timeout", 300,
                  name="top-k")
    try:
        conns = []
        for query in ("", "?top_k=5"):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=120)
            c.sendall(f"POST /v1/classify{query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                      f"Content-Length: {len(image)}\r\nConnection: close\r\n\r\n".encode() + image[:-100])
            conns.append(c)
        ok = reload_to(d, conf, three, 1)
        answers = []
        for c in conns:
            c.sendall(image[-100:])
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            c.close()
            head, _, body = data.partition(b"\r\n\r\n")
            answers.append((head.split(b"\r\n")[0], dm.parse_json(body)))
        (status, js), (status5, js5) = answers
        preds = js.get("predictions", [])
        check(ok and b" 200 " in status and len(preds) == 3 and js.get("model") == "efficientnetv2-b0",
              f"no top_k, body completed after a reload to 3 classes: 200 with 3 predictions ({status!r}, {js})")
        check(b" 400 " in status5 and "1..3" in js5.get("error", {}).get("message", ""),
              f"top_k=5 across the same reload: 400 naming 1..3 ({status5!r}, {js5})")
    finally:
        d.stop()


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photo = dm.sample_photos().get("grace_hopper.jpg")
    image = dm.read(photo) if photo else None
    with tempfile.TemporaryDirectory(prefix="effnetd-stalls-") as workdir:
        seeds = []
        for seed in (1, 2, 3):
            path = os.path.join(workdir, f"b0-seed{seed}.safetensors")
            subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", str(seed), "-o", path], check=True,
                           timeout=600)
            seeds.append(path)
        three = os.path.join(workdir, "b0-3-classes.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--classes", "3", "--seed", "1", "-o", three],
                       check=True, timeout=600)

        test_slow_readers(effnetd, seeds, workdir)
        test_stalled_body(effnetd, seeds[0], workdir, image)
        if image:
            test_default_top_k_after_reload(effnetd, seeds[0], three, workdir, image)
        else:
            print("     no sample photo: the default top_k across a reload not checked")
    finish()


if __name__ == "__main__":
    main()
