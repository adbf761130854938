#!/usr/bin/python3
"""KServe v2 / Open Inference Protocol against the real effnetd, with a v2
client written from the specs (v2client.py, which talks as Triton's
tritonclient.http does): every endpoint, FP32 tensors as JSON (flat and
nested) and binary, BYTES inputs of JPEG and PNG images (binary and base64
JSON), the classification extension, request ids, keep-alive, metrics and
access log, and every error: bad datatype, shape, sizes, binary lengths
that disagree with the header, truncated bodies, huge N, over-limit bodies,
unknown model, version, input or output, draining and overload.

FP32 answers must equal /v1/classify's scores for the same image: the
tensors come from the image module itself (tests/equivalence/
image_preprocess.c, with the preprocessing /v1/models reports).

Usage: test_v2.py EFFNETD EFFNET IMAGE_PREPROCESS   (meson passes them)
"""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, failures, finish  # noqa: E402

try:
    import numpy as np
    from v2client import Output, Result, Tensor, V2Client, encode_request  # noqa: E402
except ImportError:
    sys.stderr.write("SKIP: needs python3-numpy\n")
    sys.exit(dm.SKIP)

MODEL = "efficientnetv2-b0"
SIZE = 224
CLASSES = 1000
LABELS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "etc", "labels", "imagenet-1k.txt")


def check_error(status, headers, body, want, what, contains=""):
    """The answer is status want with a body of exactly {"error": "<string>"}."""
    try:
        j = json.loads(body) if isinstance(body, (bytes, str)) else body
    except ValueError:
        j = None
    ok = (status == want and isinstance(j, dict) and set(j) == {"error"} and isinstance(j["error"], str)
          and j["error"] != "" and contains in j["error"]
          and headers.get("content-type") == "application/json")
    return check(ok, f"{what}: {want} {{\"error\": ...{contains!r}...}} (got {status} {str(body)[:200]})")


def check_result_error(res, want, what, contains=""):
    return check_error(res.status, res.headers, res.body, want, what, contains)


def preprocess(exe, photo, pp, workdir):
    """The image module's own tensor for photo: float32 [3][SIZE][SIZE]."""
    out = os.path.join(workdir, "pre.npy")
    args = [exe, "--size", str(SIZE), "--resize", pp["resize"], "--crop", pp["crop"], "--crop-pct",
            repr(pp["crop_pct"]), "--mean", ",".join(map(repr, pp["mean"])), "--std",
            ",".join(map(repr, pp["std"])), photo, out]
    subprocess.run(args, check=True, timeout=60)
    return np.load(out)


def v1_scores(d, image):
    """{index: score} of /v1/classify's top-5, and the ordered indices."""
    s, _, body = d.classify(image, dm.content_type_of(image))
    preds = body.get("predictions", []) if s == 200 else []
    return {p["index"]: p["score"] for p in preds}, [p["index"] for p in preds]


def same_as_v1(probs, v1, what, tol=2e-5):
    """probs: [CLASSES]; v1: ({index: score}, order). /v1 prints 6 significant digits."""
    scores, order = v1
    top = [int(i) for i in np.argsort(-probs, kind="stable")[:5]]
    diff = max((abs(float(probs[i]) - scores[i]) for i in order), default=1)
    ok = top == order and diff <= tol and abs(float(probs.sum()) - 1) < 1e-4
    return check(ok, f"{what}: top-5 {top} = /v1's {order}, max |dp| {diff:.1e}")


def test_metadata(d, c):
    s, h, j = c.get("/v2")
    check(s == 200 and h.get("content-type") == "application/json" and j.get("name") == "effnetd"
          and isinstance(j.get("version"), str)
          and {"binary_tensor_data", "classification", "model_configuration"} <= set(j.get("extensions", [])),
          f"GET /v2: server metadata {j}")
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        s, _, j = c.get(path)
        check(s == 200 and j == {key: True}, f"GET {path}: 200 {j}")
    for base in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
        s, _, j = c.get(base)
        want = {"name": MODEL, "versions": ["1"], "platform": "effnetd_onednn",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}]}
        check(s == 200 and j == want, f"GET {base}: model metadata, one input and one output ({j})")
        s, _, j = c.get(base + "/ready")
        check(s == 200 and j == {"name": MODEL, "ready": True}, f"GET {base}/ready: 200 {j}")
        s, _, j = c.get(base + "/config")
        check(s == 200 and j.get("name") == MODEL and j.get("max_batch_size") == 8
              and j.get("input") == [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                                      "dims": [3, SIZE, SIZE]}]
              and j.get("output") == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [CLASSES]}]
              and j.get("dynamic_batching", {}).get("max_queue_delay_microseconds") == 20000
              and j.get("platform") and j.get("backend"), f"GET {base}/config: Triton model configuration ({j})")
        params = j.get("parameters", {})
        check(params.get("weights_source") == {"string_value": "seeded"}
              and params.get("weights_trained") == {"string_value": "false"}
              and params.get("labels_source") == {"string_value": "builtin-imagenet-1k"}
              and len(params.get("weights_sha256", {}).get("string_value", "")) == 64,
              f"GET {base}/config: parameters say the weights are seeded, untrained ({params})")
    s, h, _ = c.request("HEAD", "/v2/health/ready")
    check(s == 200, "HEAD /v2/health/ready: 200")

    # Unknown models, versions, paths; wrong methods.
    for path in ("/v2/models/resnet50", "/v2/models/resnet50/ready", "/v2/models/resnet50/config",
                 f"/v2/models/{MODEL}x", f"/v2/models/{MODEL}/versions/2", f"/v2/models/{MODEL}/versions/2/ready",
                 f"/v2/models/{MODEL}/versions/latest/config"):
        s, h, b = c.request("GET", path)
        check_error(s, h, b, 404, f"GET {path}", "unknown")
    for path in ("/v2/models", "/v2/health", "/v2/models/x/y/z", "/v2/repository", "/v2/models//ready"):
        s, h, b = c.request("GET", path)
        check_error(s, h, b, 404, f"GET {path}", "no such path")
    s, h, b = c.request("POST", "/v2/models/resnet50/infer", b"{}")
    check_error(s, h, b, 404, "POST infer of an unknown model", "unknown model 'resnet50'")
    s, h, b = c.request("POST", f"/v2/models/{MODEL}/versions/3/infer", b"{}")
    check_error(s, h, b, 404, "POST infer of an unknown version", "unknown version '3'")
    for method, path, allow in (("GET", f"/v2/models/{MODEL}/infer", "POST"),
                                ("PUT", f"/v2/models/{MODEL}/infer", "POST"),
                                ("POST", "/v2/health/live", "GET, HEAD"), ("POST", f"/v2/models/{MODEL}", "GET, HEAD"),
                                ("DELETE", f"/v2/models/{MODEL}/config", "GET, HEAD")):
        s, h, b = c.request(method, path, b"" if method in ("POST", "PUT") else None)
        check_error(s, h, b, 405, f"{method} {path}")
        check(h.get("allow") == allow, f"{method} {path}: Allow: {allow} (got {h.get('allow')})")


def test_fp32(d, c, tensors, v1, names):
    x = np.stack([tensors[n] for n in names])
    n = len(names)
    # Binary in, binary out (what Triton's client sends by default).
    res = c.infer(MODEL, [Tensor("input", "FP32", x)], [Output("probabilities", binary=True)], request_id="fp32-1")
    p = res.output("probabilities") if res.status == 200 else None
    check(res.status == 200 and res.headers.get("content-type") == "application/octet-stream"
          and res.header_len is not None and res.json.get("id") == "fp32-1" and res.json.get("model_name") == MODEL
          and res.json.get("model_version") == "1"
          and res.json["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [n, CLASSES],
                                         "parameters": {"binary_data_size": n * CLASSES * 4}}
          and p is not None and p.shape == (n, CLASSES),
          f"FP32 [{n},3,{SIZE},{SIZE}] binary in and out: 200, id echoed ({str(res.json)[:300]})")
    if p is not None:
        for i, name in enumerate(names):
            same_as_v1(p[i], v1[name], f"FP32 binary {name}")
    # JSON in (flat), JSON out.
    res = c.infer(MODEL, [Tensor("input", "FP32", x[:2], binary=False)])
    pj = res.output("probabilities") if res.status == 200 else None
    check(res.status == 200 and res.headers.get("content-type") == "application/json" and res.header_len is None
          and "id" not in res.json and pj is not None and pj.shape == (2, CLASSES),
          f"FP32 as flat JSON: 200 JSON, no id when none was sent ({str(res.json)[:200]})")
    if pj is not None and p is not None:
        check(np.abs(pj - p[:2]).max() < 1e-5, f"JSON and binary FP32 agree ({np.abs(pj - p[:2]).max():.1e})")
    # Nested JSON, binary output asked for by the request parameter.
    res = c.infer(MODEL, [Tensor("input", "FP32", x[:1], binary=False, nested=True)],
                  parameters={"binary_data_output": True})
    pn = res.output("probabilities") if res.status == 200 else None
    check(res.status == 200 and res.header_len is not None and pn is not None
          and np.abs(pn[0] - p[0]).max() < 1e-5, "FP32 as nested JSON, binary_data_output: the same numbers")
    # binary_data false on the output wins over binary_data_output.
    res = c.infer(MODEL, [Tensor("input", "FP32", x[:1])], [Output("probabilities", binary=False)],
                  parameters={"binary_data_output": True})
    check(res.status == 200 and res.header_len is None and res.output("probabilities") is not None,
          "binary_data false on the output overrides binary_data_output")
    # A versioned path.
    res = c.infer(MODEL, [Tensor("input", "FP32", x[:1])], version="1")
    check(res.status == 200, f"POST /v2/models/{MODEL}/versions/1/infer: 200")
    return p


def test_bytes(d, c, photos, v1, names):
    images = [photos[n] for n in names]
    res = c.infer(MODEL, [Tensor("input", "BYTES", images)], [Output("probabilities", binary=True)])
    p = res.output("probabilities") if res.status == 200 else None
    check(res.status == 200 and p is not None and p.shape == (len(images), CLASSES),
          f"BYTES [{len(images)}] of JPEG and PNG, binary: 200 ({str(res.json)[:200]})")
    if p is not None:
        for i, name in enumerate(names):
            same_as_v1(p[i], v1[name], f"BYTES binary {name}")
    res = c.infer(MODEL, [Tensor("input", "BYTES", images[:2], binary=False)])
    pj = res.output("probabilities") if res.status == 200 else None
    check(res.status == 200 and pj is not None and p is not None and np.abs(pj - p[:2]).max() < 1e-5,
          "BYTES as base64 in JSON: the same answers")
    return p


def test_classification(d, c, photos, v1, names, labels):
    images = [photos[n] for n in names]
    for binary in (True, False):
        res = c.infer(MODEL, [Tensor("input", "BYTES", images, binary=binary)],
                      [Output("probabilities", binary=binary, classification=3)], request_id="cls")
        out = res.json.get("outputs", [{}])[0] if res.status == 200 else {}
        strings = res.output("probabilities") if res.status == 200 else None
        check(res.status == 200 and out.get("datatype") == "BYTES" and out.get("shape") == [len(images), 3]
              and strings is not None and len(strings) == 3 * len(images),
              f"classification 3, binary {binary}: BYTES [{len(images)},3] ({str(res.json)[:200]})")
        if not strings or len(strings) != 3 * len(images):
            continue
        for i, name in enumerate(names):
            got = [s.decode() for s in strings[3 * i:3 * i + 3]]
            parsed = [g.split(":", 2) for g in got]
            scores, order = v1[name]
            ok = all(len(x) == 3 and re.fullmatch(r"\d+\.\d{6}", x[0]) for x in parsed)
            ok = ok and [int(x[1]) for x in parsed] == order[:3]
            ok = ok and all(x[2] == labels[int(x[1])] for x in parsed)
            # Batches of other sizes than /v1's single images move the last digits.
            ok = ok and all(abs(float(x[0]) - scores[int(x[1])]) <= 2e-5 for x in parsed)
            check(ok, f"classification {name}: {got} = /v1's top-3 as \"score:index:label\" "
                      f"({order[:3]}, {[scores[i] for i in order[:3]]})")
    # FP32 input with classification, and every class.
    res = c.infer(MODEL, [Tensor("input", "BYTES", images[:1])], [Output("probabilities", classification=CLASSES)])
    s = res.output("probabilities") if res.status == 200 else []
    check(res.status == 200 and len(s) == CLASSES and len({x.split(b":")[1] for x in s}) == CLASSES,
          f"classification {CLASSES}: every class once")


def test_errors(d, c, x, jpeg, png):
    path = f"/v2/models/{MODEL}/infer"

    def post(body, headers=None):
        s, h, b = c.request("POST", path, body, headers or {})
        return s, h, b

    def infer_json(obj, binary=b"", what="", want=400, contains=""):
        head = json.dumps(obj).encode()
        headers = {"inference-header-content-length": str(len(head))} if binary is not None else {}
        s, h, b = post(head + (binary or b""), headers if binary else {})
        return check_error(s, h, b, want, what, contains)

    one = x[:1]
    fp = {"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE]}
    raw = one.astype("<f4").tobytes()
    # Malformed and mismatched requests.
    s, h, b = post(b"")
    check_error(s, h, b, 400, "empty body")
    s, h, b = post(b'{"inputs": [')
    check_error(s, h, b, 400, "malformed JSON", "malformed")
    s, h, b = post(b"\xff\xfe not json")
    check_error(s, h, b, 400, "not JSON at all", "malformed")
    infer_json({"inputs": []}, None, "no inputs", 400, "one input")
    infer_json({"inputs": [dict(fp, name="data", data=[0.0])]}, None, "unknown input name", 400,
               "unexpected inference input 'data'")
    infer_json({"inputs": [dict(fp, datatype="INT8", data=[0])]}, None, "datatype INT8", 400, "datatype INT8")
    infer_json({"inputs": [dict(fp, datatype="FP16", data=[0])]}, None, "datatype FP16", 400, "datatype FP16")
    infer_json({"inputs": [dict(fp, shape=[1, 3, 384, 384], data=[0])]}, None, "wrong image size", 400,
               "does not match")
    infer_json({"inputs": [dict(fp, shape=[1, SIZE, SIZE, 3], data=[0])]}, None, "NHWC shape", 400, "does not match")
    infer_json({"inputs": [dict(fp, shape=[3, SIZE, SIZE], data=[0])]}, None, "shape without N", 400,
               "does not match")
    infer_json({"inputs": [dict(fp, shape=[0, 3, SIZE, SIZE], data=[])]}, None, "N = 0", 400, "no images")
    infer_json({"inputs": [dict(fp, data=[0.5] * 100)]}, None, "too few values", 400, "100 values")
    infer_json({"inputs": [dict(fp, data=["a"] * (3 * SIZE * SIZE))]}, None, "strings as FP32", 400,
               "must be numbers")
    infer_json({"inputs": [dict(fp, data=[0.0] * (3 * SIZE * SIZE))], "outputs": [{"name": "logits"}]}, None,
               "unknown output", 400, "unexpected inference output 'logits'")
    infer_json({"inputs": [dict(fp, data=[0.0] * (3 * SIZE * SIZE))],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 1001}}]}, None,
               "classification 1001", 400, "classification")
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]}, None,
               "BYTES not base64", 400, "base64")
    # Huge N and sizes: 413, before any tensor is allocated.
    infer_json({"inputs": [dict(fp, shape=[5, 3, SIZE, SIZE], data=[])]}, None, "N = 5 over max-images 4", 413,
               "limit is 4")
    infer_json({"inputs": [dict(fp, shape=[2147483647, 3, SIZE, SIZE], data=[])]}, None, "N = 2^31-1", 413,
               "limit is 4")
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1000000000],
                            "parameters": {"binary_data_size": 4}}]}, b"\0\0\0\0", "BYTES N = 10^9", 413, "limit")
    ans = dm.raw_http(d.port, f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000000\r\n\r\n".encode(),
                      timeout=10)
    head, _, rest = ans.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 413") and rest.startswith(b'{"error":"') and b"v2-max-body-bytes" in rest,
          f"Content-Length 200 MB: 413 before the body ({head[:40]!r} {rest[:120]!r})")
    big = struct.pack("<I", 30_000_000) + b"\0" * 16
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": len(big)}}]}, big, "a BYTES element over max-body-bytes",
               413, "limit")
    # Binary lengths that disagree with the header.
    infer_json({"inputs": [dict(fp, parameters={"binary_data_size": len(raw)})]}, raw[:-4],
               "binary FP32 4 bytes short", 400, "truncated")
    infer_json({"inputs": [dict(fp, parameters={"binary_data_size": len(raw) - 4})]}, raw[:-4],
               "binary_data_size of the wrong size", 400, "needs")
    infer_json({"inputs": [dict(fp, parameters={"binary_data_size": len(raw)})]}, raw + b"xx",
               "2 bytes after the binary data", 400, "2 bytes after")
    head = json.dumps({"inputs": [dict(fp, parameters={"binary_data_size": len(raw)})]}).encode()
    s, h, b = post(head + raw)
    check_error(s, h, b, 400, "binary data without Inference-Header-Content-Length", "malformed")
    s, h, b = post(head, {"inference-header-content-length": str(len(head) + 10)})
    check_error(s, h, b, 400, "Inference-Header-Content-Length past the body", "Inference-Header-Content-Length")
    s, h, b = post(head + raw, {"inference-header-content-length": "12x"})
    check_error(s, h, b, 400, "Inference-Header-Content-Length not a number", "not a byte count")
    s, h, b = post(head + raw, {"inference-header-content-length": str(len(head) - 3)})
    check_error(s, h, b, 400, "Inference-Header-Content-Length cutting the JSON", "malformed")
    nan = np.full_like(one, np.nan).astype("<f4").tobytes()
    infer_json({"inputs": [dict(fp, parameters={"binary_data_size": len(nan)})]}, nan, "NaN FP32", 400,
               "not a finite number")
    elems = struct.pack("<I", len(jpeg)) + jpeg
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                            "parameters": {"binary_data_size": len(elems)}}]}, elems, "BYTES [2] with one element", 400,
               "element 2 of 2")
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": len(elems)}}]}, elems[:-100], "BYTES truncated", 400,
               "truncated")
    bad = struct.pack("<I", len(jpeg) + 50) + jpeg
    infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": len(bad)}}]}, bad, "BYTES length past its data", 400,
               "runs past")
    # Images that do not decode: 400 naming the image.
    for what, img in (("a truncated JPEG", jpeg[:len(jpeg) // 2]), ("text", b"hello, not an image"),
                      ("an empty image", b"")):
        elems = struct.pack("<I", len(png)) + png + struct.pack("<I", len(img)) + img
        infer_json({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                                "parameters": {"binary_data_size": len(elems)}}]}, elems, f"BYTES with {what}", 400,
                   "image 2:")
    s, h, b = post(b"{}", {"content-encoding": "gzip"})
    check_error(s, h, b, 415, "Content-Encoding gzip", "Content-Encoding")
    # A body cut short by a client that leaves: the server carries on.
    dm.raw_http(d.port, f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n".encode() + head[:100],
                timeout=2)
    s, _, j = c.get("/v2/health/ready")
    check(s == 200, "after the bad requests: still ready")


def test_concurrency(d, photos, x, v1, names):
    """v2 FP32, v2 BYTES and /v1 requests at once: every answer right,
    passes shared between them."""
    before = d.metrics()
    jobs = []
    for i, name in enumerate(names):
        jobs.append(("fp32", name))
        jobs.append(("bytes", name))
        jobs.append(("v1", name))
    results = [None] * len(jobs)
    gate = threading.Barrier(len(jobs))

    def run(k):
        kind, name = jobs[k]
        try:
            gate.wait()
            if kind == "v1":
                results[k] = v1_scores(d, photos[name])
                return
            c = V2Client(d.port)
            t = (Tensor("input", "FP32", x[names.index(name)][None]) if kind == "fp32"
                 else Tensor("input", "BYTES", [photos[name]]))
            res = c.infer(MODEL, [t], [Output("probabilities", binary=True)])
            c.close()
            results[k] = res.output("probabilities")[0] if res.status == 200 else res.status
        except Exception as e:  # reported below
            results[k] = e
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = 0
    for (kind, name), r in zip(jobs, results):
        if kind == "v1":
            ok += r is not None and not isinstance(r, Exception) and r[1] == v1[name][1]
        elif isinstance(r, np.ndarray):
            top = [int(i) for i in np.argsort(-r, kind="stable")[:5]]
            ok += top == v1[name][1] and max(abs(float(r[i]) - v1[name][0][i]) for i in top) <= 2e-5
    check(ok == len(jobs), f"{len(jobs)} concurrent v1 and v2 requests: {ok} right answers")
    after = d.metrics()
    batches = after["effnetd_batches_total"] - before["effnetd_batches_total"]
    images = after["effnetd_batch_images_total"] - before["effnetd_batch_images_total"]
    check(images == len(jobs) and batches < images, f"they shared forward passes: {images:.0f} images in "
                                                     f"{batches:.0f} passes")


def test_keepalive_and_metrics(d, x):
    c = V2Client(d.port)
    for _ in range(5):
        res = c.infer(MODEL, [Tensor("input", "FP32", x[:1])])
    c.get("/v2/health/live")
    check(res.status == 200 and c.connections == 1, f"6 requests on one kept-alive connection ({c.connections})")
    c.close()
    m = d.metrics()
    infer200 = m.get('effnetd_http_requests_total{protocol="v2",route="/v2/models/{model}/infer",code="200"}', 0)
    infer400 = m.get('effnetd_http_requests_total{protocol="v2",route="/v2/models/{model}/infer",code="400"}', 0)
    check(infer200 >= 10 and infer400 >= 20, f"metrics count v2 infer answers by status ({infer200}, {infer400})")
    check(m.get('effnetd_http_requests_total{protocol="v2",route="/v2/health/ready",code="200"}', 0) >= 1
          and m.get('effnetd_http_requests_total{protocol="v2",route="other",code="404"}', 0) >= 4
          and m.get('effnetd_http_requests_total{protocol="v1",route="/v1/classify",code="200"}', 0) >= 1,
          "metrics carry the protocol label")
    check(m.get('effnetd_http_errors_total{code="invalid_request"}', 0) >= 10, "invalid_request errors counted")
    check(m.get('effnetd_http_request_duration_seconds_count{protocol="v2",route="/v2/models/{model}/infer"}', 0)
          >= 30, "latency histogram per protocol and route")
    log = d.log_text()
    check(re.search(r'"POST /v2/models/efficientnetv2-b0/infer" 200 .*images=\d', log) is not None
          and re.search(r'"POST /v2/models/efficientnetv2-b0/infer" 400 invalid_request', log) is not None,
          "access log lines for v2 infer requests")


def test_drain(d, jpeg):
    """SIGTERM: ready turns 503 with Retry-After, new infer requests 503,
    and a request whose body is still arriving is answered."""
    head, _ = encode_request([Tensor("input", "BYTES", [jpeg])])
    body_hl = head.index(b"}]}") + 3   # the JSON ends before the binary data
    held = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    held.sendall(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nhost: localhost\r\ncontent-length: {len(head)}\r\n"
                 f"inference-header-content-length: {body_hl}\r\n\r\n".encode() + head[:1000])
    time.sleep(0.3)
    d.proc.send_signal(15)
    time.sleep(0.3)
    c = V2Client(d.port)
    s, h, b = c.request("GET", "/v2/health/ready")
    check_error(s, h, b, 503, "draining: /v2/health/ready")
    check(h.get("retry-after") is not None, "draining 503 carries Retry-After")
    s, h, b = c.request("GET", f"/v2/models/{MODEL}/ready")
    check_error(s, h, b, 503, "draining: model ready")
    s, _, _ = c.request("GET", "/v2/health/live")
    check(s == 200, "draining: still live")
    res = c.infer(MODEL, [Tensor("input", "BYTES", [jpeg])])
    check_result_error(res, 503, "draining: infer", "shutting down")
    held.sendall(head[1000:])
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 100:
        chunk = held.recv(65536)
        if not chunk:
            break
        answer += chunk
    held.close()
    check(answer.startswith(b"HTTP/1.1 200"), f"the request in flight at SIGTERM is answered ({answer[:40]!r})")
    check(d.proc.wait(60) == 0, "exit 0 after the drain")


def test_small(effnetd, weights, workdir, jpeg, x):
    """Overload (503 + Retry-After) on a queue of 2, the v2-max-body-bytes
    setting, and the JSON apart from the data capped (V2_MAX_HEAD)."""
    # One decoding thread and one waiting request as well: whichever stage
    # is the slower here (under a sanitizer, our preprocessing is), its
    # queue is the one that fills.
    d = dm.Daemon(effnetd, weights, workdir, "--queue", 2, "--max-images", 2, "--max-batch", 1, "--max-delay-ms", 0,
                  "--retry-after", 3, "--v2-max-body-bytes", 1000000, "--max-body-bytes", 1000000,
                  "--max-body-total", 2500000, "--max-client-share", 2500000, "--decode-threads", 1,
                  "--decode-queue", 1,
                  name="effnetd-v2-small")
    try:
        def one():
            return V2Client(d.port).infer(MODEL, [Tensor("input", "BYTES", [jpeg, jpeg])])
        results = []
        threads = [threading.Thread(target=lambda: results.append(one())) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r.status for r in results)
        busy = [r for r in results if r.status == 503]
        check(set(statuses) <= {200, 503} and 200 in statuses and busy,
              f"12 clients of 2 images on a queue of 2: 200s and 503s ({statuses})")
        if busy:
            check_result_error(busy[0], 503, "queue full", "retry later")
            check(busy[0].headers.get("retry-after") == "3", "503 carries Retry-After: 3")
        res = V2Client(d.port).infer(MODEL, [Tensor("input", "FP32", x[:1], binary=False)])
        check_result_error(res, 413, "JSON FP32 of ~3 MB over --v2-max-body-bytes 1000000", "limit")
        res = V2Client(d.port).infer(MODEL, [Tensor("input", "FP32", x[:1])])
        check(res.status == 200, "binary FP32 (600 kB) fits the same limit")
        # 900 kB of JSON (ignored padding) besides the data: over the head's cap.
        head, _ = encode_request([Tensor("input", "BYTES", [jpeg], binary=False)])
        padded = head[:-1] + b', "padding": "' + b"x" * 900000 + b'"}'
        res = Result(*V2Client(d.port).request("POST", f"/v2/models/{MODEL}/infer", padded))
        check_result_error(res, 413, "900 kB of JSON besides the data", "apart from its input's data")
        res = Result(*V2Client(d.port).request("POST", f"/v2/models/{MODEL}/infer", head))
        check(res.status == 200, f"the same request without the padding: 200 ({res.status})")
    finally:
        check(d.stop() == 0, "small server exits 0")


def main():
    if len(sys.argv) < 4:
        sys.stderr.write(f"usage: {sys.argv[0]} EFFNETD EFFNET IMAGE_PREPROCESS\n")
        sys.exit(2)
    effnetd, effnet, preprocess_exe = sys.argv[1:4]
    photos_paths = dm.sample_photos()
    if "grace_hopper.jpg" not in photos_paths or not any(n.endswith(".png") for n in photos_paths):
        sys.stderr.write("SKIP: sample photos missing (python3-matplotlib, python3-skimage)\n")
        sys.exit(dm.SKIP)
    names = ["grace_hopper.jpg"] + sorted(n for n in photos_paths if n.endswith(".png"))[:2]
    photos = {n: dm.read(photos_paths[n]) for n in names}
    with open(LABELS_PATH) as f:
        labels = f.read().splitlines()

    with tempfile.TemporaryDirectory(prefix="effnetd-v2-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        d = dm.Daemon(effnetd, weights, workdir, "--max-delay-ms", 20, "--max-images", 4)
        try:
            s, _, b = d.request("GET", "/v1/models")
            pp = dm.parse_json(b)["models"][0]["preprocessing"]
            tensors = {n: preprocess(preprocess_exe, photos_paths[n], pp, workdir) for n in names}
            x = np.stack([tensors[n] for n in names])
            v1 = {n: v1_scores(d, photos[n]) for n in names}
            check(all(len(v[1]) == 5 for v in v1.values()), "/v1 answers for the photos")
            c = V2Client(d.port)
            test_metadata(d, c)
            test_fp32(d, c, tensors, v1, names)
            test_bytes(d, c, photos, v1, names)
            test_classification(d, c, photos, v1, names, labels)
            test_errors(d, c, x, photos[names[0]], photos[names[1]])
            c.close()
            test_concurrency(d, photos, x, v1, names)
            test_keepalive_and_metrics(d, x)
            test_drain(d, photos[names[0]])
        finally:
            if d.proc.poll() is None:
                d.stop()
            if failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-4000:])
        test_small(effnetd, weights, workdir, photos[names[0]], x)
    finish()


if __name__ == "__main__":
    main()
