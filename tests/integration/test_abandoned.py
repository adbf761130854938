#!/usr/bin/python3
"""Clients that send a request and leave before the answer: the server must
answer the others, count nothing as waiting once the jobs are done, and stop
promptly on SIGTERM (a leaked 'waiting' count would hold the drain until its
timeout)."""
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import Daemon, read, sample_photos  # noqa: E402


def main():
    effnetd, effnet = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "b0.safetensors")
        os.system(f"{effnet} init-weights --variant b0 --seed 1 -o {weights}")
        photo = read(sample_photos()["grace_hopper.jpg"])
        d = Daemon(effnetd, weights, tmp, "--max-batch", "4", "--drain-timeout", "60")
        try:
            head = (f"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(photo)}\r\n\r\n").encode()
            socks = []
            for _ in range(16):
                s = socket.create_connection(("127.0.0.1", d.port))
                s.sendall(head + photo)
                socks.append(s)
            time.sleep(0.05)
            for s in socks:  # leave with the jobs queued
                s.close()
            status, _, body = d.classify(photo)
            assert status == 200, (status, body)
            # Every abandoned request ends: its job runs to its end, or it
            # stops where its client was seen gone (while its images were
            # decoded); each of the 17 is counted once (answered, or 499
            # client_closed_request), and then nothing may be queued.
            deadline = time.monotonic() + 120
            while True:
                m = d.metrics()
                queued = sum(v for k, v in m.items() if k.startswith("effnetd_queue_images"))
                counted = sum(v for k, v in m.items()
                              if k.startswith('effnetd_http_requests_total{protocol="v1",route="/v1/classify"'))
                if queued == 0 and counted >= 17:
                    break
                assert time.monotonic() < deadline, \
                    f"not drained after 120 s: {queued} images queued, {counted} of 17 requests counted"
                time.sleep(0.2)
            gone = m.get('effnetd_http_errors_total{code="client_closed_request"}', 0)
            assert counted == 17 and gone <= 16, (counted, gone)
            time.sleep(1.0)
            t0 = time.monotonic()
            code = d.stop(timeout=30)
            took = time.monotonic() - t0
            assert code == 0, code
            assert took < 20, f"SIGTERM took {took:.1f} s with only abandoned requests behind"
            print(f"ok   16 abandoned requests ({gone:.0f} counted as 499); stopped {took:.2f} s after SIGTERM")
        except Exception:
            print(d.log_text()[-4000:], file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
