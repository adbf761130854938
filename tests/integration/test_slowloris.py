#!/usr/bin/python3
"""Slow clients cannot take the probes down.

Usage: test_slowloris.py EFFNETD EFFNET

Debian's slowhttptest holds hundreds of connections open from 127.0.0.1,
trickling header lines (slowloris), for 20 s each run, against effnetd on
loopback:
  1. with the defaults, one address gets at most max-connections-per-client
     of them: /healthz from another address (127.0.0.2) keeps answering;
  2. with the per-client limit off and the attack filling max-connections,
     the admin listener (admin-listen) keeps answering /healthz, /readyz and
     /metrics, and serves nothing else (404 for /v1/classify there);
  3. clients that never read their (large) answers hold no decoded images;
  4. a body trickled in is cut off at body-timeout;
  5. header bytes trickled in (never idle for connection-timeout) are cut
     off at header-timeout, while a kept-alive client is unaffected.
Each probe must answer within 3 s, as a kubelet probe would need.
"""
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

ATTACK_S = 20


# slowhttptest's modes: slow headers (slowloris), slow body (R-U-Dead-Yet)
# and slow read (a tiny window, answers read a few bytes at a time).
ATTACKS = {
    "headers": ["-H", "-i", "5", "-r", "200", "-t", "GET", "-x", "24", "-p", "3"],
    "body": ["-B", "-i", "5", "-r", "200", "-s", "8192", "-t", "POST", "-x", "10", "-p", "3"],
    "read": ["-X", "-r", "200", "-w", "10", "-y", "20", "-n", "5", "-z", "32", "-k", "3", "-p", "3"],
}


def attack(port, connections, mode="headers", path="/healthz"):
    """slowhttptest against path, in the background."""
    return subprocess.Popen(["slowhttptest", "-c", str(connections)] + ATTACKS[mode] +
                            ["-u", f"http://127.0.0.1:{port}{path}", "-l", str(ATTACK_S)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def classify_from(port, photo, source):
    """Status of a classify of photo sent from the address source."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        c.request("POST", "/v1/classify", body=photo, headers={"Content-Type": "image/jpeg"})
        r = c.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        c.close()


def test_slow_body_and_read_attacks(effnetd, weights, workdir):
    """slowhttptest's slow-body and slow-read attacks from 127.0.0.1: probes
    and a classify from another address keep answering."""
    photo = dm.read(dm.sample_photos()["grace_hopper.jpg"])
    for mode, path in (("body", "/v1/classify"), ("read", "/v1/models")):
        d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 256, "--body-timeout", 10,
                      "--access-log=false", name=f"slow-{mode}")
        try:
            a = attack(d.port, 300, mode, path)
            got = probes_during(a, lambda: (dm.get_status(d.port, "/healthz", "127.0.0.2"),
                                            classify_from(d.port, photo, "127.0.0.2")))
            opened = d.metrics().get("effnetd_http_connections_total", 0)
            check(opened >= 100 and all(g == (200, 200) for g in got),
                  f"slowhttptest slow {mode} on {path} from 127.0.0.1 ({opened:.0f} connections accepted): "
                  f"/healthz from 127.0.0.2 and classify answer {got}")
        finally:
            d.stop()


def probes_during(a, fn, rounds=5):
    time.sleep(4)   # let it open its connections
    got = []
    for _ in range(rounds):
        got.append(fn())
        time.sleep(2)
    a.wait(ATTACK_S + 30)
    return got


def test_slow_body(effnetd, weights, workdir):
    """A body trickled at 10 bytes a second is cut off at body-timeout (the
    connection closed, and counted), while other requests are served."""
    d = dm.Daemon(effnetd, weights, workdir, "--body-timeout", 2, name="slow-body")
    try:
        c = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        c.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        t0 = time.monotonic()
        closed = None
        while time.monotonic() - t0 < 15:
            try:
                c.sendall(b"x" * 10)
            except OSError:
                closed = time.monotonic() - t0
                break
            time.sleep(1)
        c.close()
        m = d.metrics()
        check(closed is not None and closed < 6 and m.get("effnetd_http_body_timeouts_total") == 1.0,
              f"a body trickled at 10 B/s is closed at body-timeout 2 s (after {closed} s), and counted")
        check(dm.get_status(d.port, "/readyz") == 200, "the daemon serves others")
    finally:
        d.stop()


def test_slow_headers(effnetd, weights, workdir):
    """A header byte every 0.5 s: never idle for connection-timeout (30 s),
    cut off at header-timeout (2 s) and counted; a kept-alive connection
    that waits 3 s between its requests is not cut."""
    d = dm.Daemon(effnetd, weights, workdir, "--header-timeout", 2, "--connection-timeout", 30,
                  name="slow-headers")
    try:
        keep = d.conn(timeout=10)
        keep.request("GET", "/healthz")
        first = keep.getresponse()
        first.read()
        t_first = time.monotonic()
        c = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        t0 = time.monotonic()
        closed = None
        while time.monotonic() - t0 < 15 and closed is None:
            readable, _, _ = select.select([c], [], [], 0.5)
            try:
                if readable and not c.recv(100):
                    closed = time.monotonic() - t0
                else:
                    c.sendall(b"x")
            except OSError:
                closed = time.monotonic() - t0
        c.close()
        m = d.metrics()
        check(closed is not None and 1.5 < closed < 4.5 and m.get("effnetd_http_header_timeouts_total") == 1.0,
              f"headers trickled at a byte per 0.5 s are cut at header-timeout 2 s (after {closed} s), not at "
              f"connection-timeout 30 s, and counted ({m.get('effnetd_http_header_timeouts_total')})")
        time.sleep(max(0.0, 3 - (time.monotonic() - t_first)))
        keep.request("GET", "/healthz")
        second = keep.getresponse()
        second.read()
        keep.close()
        check(first.status == 200 and second.status == 200,
              "a kept-alive client idle past header-timeout (within connection-timeout) is served again")
    finally:
        d.stop()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


def unread_socket(port):
    """A connection whose receive window stays small (set before connecting:
    the window is agreed then), so that an answer it never reads stays on
    the daemon's side."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Small segments, as a client on a slow link has: the daemon's send
    # buffer grows with segment size times window, so it stays small too
    # (on loopback's 64 kB segments the kernel would take whole answers).
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    c.settimeout(30)
    c.connect(("127.0.0.1", port))
    return c


def post_unread(port, body, ctype):
    """Sends a classify request with top_k=1000 on an unread_socket."""
    c = unread_socket(port)
    c.sendall(f"POST /v1/classify?top_k=1000 HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return c


def test_slow_readers(effnetd, weights, workdir):
    """Clients that send 16-image requests with top_k=1000 and never read
    the answers: once the answers are queued, their decoded images (9.6 MB
    of tensors per request at 224 px) are freed, so the daemon's memory
    grows by the answers only."""
    photo = dm.sample_photos().get("grace_hopper.jpg")
    if not photo:
        print("     no sample photo: slow readers not checked")
        return
    body, ctype = dm.multipart([("p.jpg", "image/jpeg", dm.read(photo))] * 16)
    # Under AddressSanitizer freed memory waits in a quarantine: none, so
    # that what is freed leaves the RSS as in a normal build.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"}
    d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 8, "--queue", 128, "--access-log=false", name="slow-readers",
                  env=env)
    socks = []
    try:
        d.classify(dm.read(photo))
        base = rss_mb(d.proc.pid)
        socks += [post_unread(d.port, body, ctype) for _ in range(8)]
        deadline = time.monotonic() + 120
        # Every image inferred (the answers themselves stay unsent).
        while d.metrics().get("effnetd_batch_images_total", 0) < 1 + 8 * 16 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        grown = rss_mb(d.proc.pid) - base
        check(grown < 40, f"8 unread answers of 16 images each: RSS grew {grown:.0f} MB "
              f"(their tensors alone are 77 MB)")
        check(dm.get_status(d.port, "/healthz") == 200, "the daemon answers meanwhile")
        print(f"     answers not yet sent: {d.metrics().get('effnetd_http_answer_bytes'):.0f} bytes held")
    finally:
        for c in socks:
            c.close()
        d.stop()


def test_answer_budget(effnetd, weights, workdir):
    """Answers that slow readers leave unread count against max-answer-total:
    once they hold it, a new request is refused with 503 before any work is
    spent on it, and it is served again once those clients go away."""
    photo = dm.sample_photos().get("grace_hopper.jpg")
    if not photo:
        print("     no sample photo: the answer budget not checked")
        return
    body, ctype = dm.multipart([("p.jpg", "image/jpeg", dm.read(photo))] * 16)
    limit = 200000
    d = dm.Daemon(effnetd, weights, workdir, "--max-answer-total", limit, "--access-log=false",
                  name="answer-budget")
    socks = []
    try:
        socks += [post_unread(d.port, body, ctype) for _ in range(4)]
        deadline = time.monotonic() + 120
        held = 0
        while time.monotonic() < deadline:
            held = d.metrics().get("effnetd_http_answer_bytes", 0)
            if held >= limit:
                break
            time.sleep(0.2)
        check(held >= limit, f"4 unread answers of 16 images with top_k=1000 hold {held:.0f} bytes")
        status, hdrs, answer = d.classify(dm.read(photo))
        err = (answer or {}).get("error", {})
        check(status == 503 and err.get("code") == "overloaded" and "max-answer-total" in err.get("message", "")
              and hdrs.get("retry-after"), f"a new request then gets 503 ({status}, {err})")
        check(dm.get_status(d.port, "/healthz") == 200, "the probes still answer")
        for c in socks:
            c.close()
        socks = []
        deadline = time.monotonic() + 30
        while d.metrics().get("effnetd_http_answer_bytes", 0) >= limit and time.monotonic() < deadline:
            time.sleep(0.2)
        status, _, _ = d.classify(dm.read(photo))
        check(status == 200, f"served again once the slow readers left ({status})")
    finally:
        for c in socks:
            c.close()
        d.stop()


def main():
    effnetd, effnet = dm.find_effnet_tools()
    if not shutil.which("slowhttptest"):
        print("SKIP: slowhttptest not installed (Debian package slowhttptest)")
        sys.exit(dm.SKIP)
    with tempfile.TemporaryDirectory(prefix="effnetd-slow-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)

        d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 256, "--access-log=false",
                      name="per-client")
        try:
            a = attack(d.port, 400)
            got = probes_during(a, lambda: dm.get_status(d.port, "/healthz", "127.0.0.2"))
            check(all(g == 200 for g in got),
                  f"slowloris from 127.0.0.1 (400 connections): /healthz from 127.0.0.2 answers {got}")
        finally:
            d.stop()

        d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 256, "--max-connections-per-client", 0,
                      "--admin-listen", "127.0.0.1:0", "--access-log=false", name="admin")
        try:
            admin = dm.admin_port(d)
            check(admin > 0, "the admin listener's address is logged")
            check(dm.get_status(admin, "/v1/classify") == 404 and dm.get_status(admin, "/v1/models") == 404,
                  "the admin listener serves no API routes")
            a = attack(d.port, 400)
            got = probes_during(a, lambda: (dm.get_status(admin, "/healthz"), dm.get_status(admin, "/readyz"),
                                            dm.get_status(admin, "/metrics"),
                                            dm.get_status(d.port, "/healthz", "127.0.0.2")))
            check(all(g[:3] == (200, 200, 200) for g in got),
                  f"slowloris filling the main listener: admin /healthz, /readyz, /metrics answer {[g[:3] for g in got]}")
            print(f"     the main listener from 127.0.0.2 meanwhile: {[g[3] for g in got]}")
            after = None
            for _ in range(30):   # the attack's sockets close as it exits
                after = dm.get_status(d.port, "/healthz")
                if after == 200:
                    break
                time.sleep(1)
            check(after == 200, f"after the attack the main listener answers again ({after})")
        finally:
            d.stop()
        test_slow_body_and_read_attacks(effnetd, weights, workdir)
        test_slow_readers(effnetd, weights, workdir)
        test_answer_budget(effnetd, weights, workdir)
        test_slow_body(effnetd, weights, workdir)
        test_slow_headers(effnetd, weights, workdir)
    finish()


if __name__ == "__main__":
    main()
