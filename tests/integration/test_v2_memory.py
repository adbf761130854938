#!/usr/bin/python3
"""/v2 infer JSON costs what its tensor costs, not what its text would cost
as a tree; a client's extreme values are the client's error.

Usage: test_v2_memory.py EFFNETD EFFNET

  1. two concurrent 48 MiB bodies whose data is `[[],[],...]` and
     `[{},{},...]` (as a tree: some 46 and 78 bytes per byte of text), and
     two whose `[[],[],...]` sits in the parameters, against a daemon with
     v2-max-body-bytes 50 MiB and max-body-total 200 MiB: each is answered
     400 or 413, /healthz answers meanwhile, and the daemon's peak RSS
     (VmHWM) grows by less than twice the two bodies' buffers and 64 MiB
     (tens of GB once: the whole text went to jansson first);
  2. an FP32 input of 3.0e38 everywhere, in JSON and as binary data,
     overflows the network: 400 naming the input and its range, not a 500
     that blames the weights; the same request with an image's values is
     answered 200, and the daemon stays ready.
"""
import http.client
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish, status_kb  # noqa: E402

MODEL = "efficientnetv2-b0"
MiB = 1 << 20


def body_of(shape, where, size):
    """A /v2 infer request of about size bytes: shape ("[]," or "{},")
    repeated as the input's data, or in the request's parameters."""
    n = size // len(shape)
    filler = (shape * n)[:-1]
    head = {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}
    if where == "data":
        return (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":[' +
                filler.encode() + b"]}]}")
    return (b'{"inputs":[' + json.dumps(head).encode() + b'],"parameters":{"x":[' + filler.encode() + b"]}}")


def post(port, body, results, key):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        results[key] = (r.status, r.read()[:300], time.monotonic() - t0)
        c.close()
    except Exception as e:  # noqa: BLE001 - recorded and checked by the caller
        results[key] = (type(e).__name__, str(e).encode(), time.monotonic() - t0)


def test_amplification(effnetd, weights, workdir):
    # Under AddressSanitizer freed memory waits in a quarantine: none, so
    # that the peak is what is held, as in a normal build.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"}
    limit, size = 50 * MiB, 48 * MiB
    # A budget in which a whole 48 MiB text once went to jansson (charged
    # at twice its length): the bodies were admitted, and their trees
    # took gigabytes.
    total = 200 * MiB
    rounds = ((("[],", "data"), ("{},", "data")), (("[],", "parameters"), ("[[]],", "data")))
    for i, rnd in enumerate(rounds):
        d = dm.Daemon(effnetd, weights, workdir, "--v2-max-body-bytes", limit, "--max-body-total", total,
                      "--deadline-ms", 120000, "--access-log=false", name=f"v2-amplification-{i}", env=env)
        try:
            bodies = {f"{s} in {w}": body_of(s, w, size) for s, w in rnd}
            before = status_kb(d.proc.pid, "VmHWM")
            results = {}
            threads = [threading.Thread(target=post, args=(d.port, b, results, k)) for k, b in bodies.items()]
            for t in threads:
                t.start()
            probes = []
            while any(t.is_alive() for t in threads):
                probes.append(dm.get_status(d.port, "/healthz", timeout=10))
                time.sleep(0.2)
            for t in threads:
                t.join()
            grown = (status_kb(d.proc.pid, "VmHWM") - before) / 1024
            bound = 2 * 2 * limit / MiB + 64
            for k, (status, body, secs) in sorted(results.items()):
                want = 413 if "parameters" in k else 400
                check(status == want, f"48 MiB of {k}: {want} in {secs:.1f} s ({status} {body[:160]!r})")
            check(grown < bound, f"two concurrent 48 MiB bodies ({', '.join(bodies)}): peak RSS grew {grown:.0f} "
                  f"MiB (bound {bound:.0f} MiB: twice the two body buffers and 64 MiB)")
            check(probes and all(p == 200 for p in probes),
                  f"/healthz answers meanwhile ({len(probes)} probes: {sorted(set(probes))})")
            check(dm.get_status(d.port, "/readyz") == 200, "the daemon is ready after them")
        finally:
            check(d.stop() == 0, "the daemon exits 0")


def infer_json(d, values):
    req = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": values}]}
    s, _, b = d.request("POST", f"/v2/models/{MODEL}/infer", json.dumps(req).encode(),
                        {"Content-Type": "application/json"})
    return s, dm.parse_json(b)


def infer_binary(d, value):
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                                   "parameters": {"binary_data_size": 4 * 3 * 224 * 224}}]}).encode()
    body = head + struct.pack("<f", value) * (3 * 224 * 224)
    s, _, b = d.request("POST", f"/v2/models/{MODEL}/infer", body,
                        {"Inference-Header-Content-Length": str(len(head))})
    return s, dm.parse_json(b)


def test_client_numerics(effnetd, weights, workdir):
    d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 1, name="v2-numerics")
    try:
        n = 3 * 224 * 224
        s, b = infer_json(d, [3.0e38] * n)
        msg = str(b.get("error"))
        check(s == 400 and "input 'input'" in msg and "3e+38" in msg and "weights" not in msg,
              f"JSON FP32 of 3.0e38 everywhere: 400 naming the input and its range ({s} {msg[:200]})")
        s, b = infer_binary(d, 3.0e38)
        msg = str(b.get("error"))
        check(s == 400 and "image 1 holds values from 3e+38 to 3e+38" in msg,
              f"binary FP32 of 3.0e38 everywhere: 400 ({s} {msg[:200]})")
        s, b = infer_json(d, [(i % 200) / 100.0 - 1.0 for i in range(n)])
        check(s == 200 and "outputs" in b, f"an image's values: 200 ({s} {str(b)[:120]})")
        m = d.metrics()
        fivexx = {k: v for k, v in m.items() if k.startswith("effnetd_http_errors_total") and "non_finite" in k}
        check(sum(fivexx.values()) == 0, f"no non_finite_output counted: {fivexx}")
        check(dm.get_status(d.port, "/readyz") == 200, "the daemon is still ready")
    finally:
        d.stop()


def main():
    effnetd, effnet = dm.find_effnet_tools()
    with tempfile.TemporaryDirectory(prefix="effnetd-v2-memory-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        test_client_numerics(effnetd, weights, workdir)
        test_amplification(effnetd, weights, workdir)
    finish()


if __name__ == "__main__":
    main()
