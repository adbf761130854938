#!/usr/bin/python3
"""The KServe v2 gRPC service (grpc-listen) against the real effnetd, with
Debian's grpcio and stubs generated from the tree's kserve.proto
(grpcclient.py, used as tritonclient.grpc uses them): health, metadata,
model config, infer with raw and typed FP32 and with BYTES images,
classification, 16 concurrent requests, a stream of requests, and the
errors (unknown model, version and output, wrong shape and datatype, an
oversized message, a deadline). Every answer is compared with REST /v2's
for the same input (v2client.py), and FP32 ones with /v1's scores.

Then the hostile clients, with a raw HTTP/2 client: streams past
grpc-max-streams, oversized headers, a silent connection and a message
that never ends (body-timeout); /metrics and the access log; drain
(SIGTERM answers the calls in flight, refuses new ones).

Usage: test_grpc.py EFFNETD EFFNET IMAGE_PREPROCESS   (meson passes them)
"""

import json
import os
import re
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
    import grpc
    import numpy as np
    import grpc_tools  # noqa: F401
    import grpcclient as gc  # noqa: E402
    from v2client import Output, Tensor, V2Client  # noqa: E402
except ImportError as e:
    sys.stderr.write(f"SKIP: needs python3-grpcio, python3-grpc-tools and python3-numpy ({e})\n")
    sys.exit(dm.SKIP)

MODEL = "efficientnetv2-b0"
SIZE = 224
CLASSES = 1000
MAX_BODY = 4000000     # v2-max-body-bytes: 4 FP32 images of B0 fit (2.4 MB), 5 MB do not


def grpc_port(d):
    m = re.search(r"gRPC \(KServe v2 GRPCInferenceService\) listening on http://127\.0\.0\.1:(\d+)", d.log_text())
    return int(m.group(1)) if m else None


def preprocess(exe, photo, pp, workdir):
    out = os.path.join(workdir, "pre.npy")
    args = [exe, "--size", str(SIZE), "--resize", pp["resize"], "--crop", pp["crop"], "--crop-pct",
            repr(pp["crop_pct"]), "--mean", ",".join(map(repr, pp["mean"])), "--std",
            ",".join(map(repr, pp["std"])), photo, out]
    subprocess.run(args, check=True, timeout=60)
    return np.load(out)


def rpc_error(fn, *args, **kw):
    """The grpc.StatusCode of a call that fails, or None."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return None, None


def check_code(got, want, what, contains=""):
    code, details = got
    return check(code == want and contains in (details or ""), f"{what}: {want} ...{contains!r}... (got {code} {details!r})")


def same_probs(a, b, what, tol=2e-5):
    a, b = np.asarray(a), np.asarray(b)
    ok = a.shape == b.shape and a.size > 0 and float(np.max(np.abs(a - b))) <= tol and \
        all(list(np.argsort(-x, kind="stable")[:5]) == list(np.argsort(-y, kind="stable")[:5]) for x, y in zip(a, b))
    diff = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else -1
    return check(ok, f"{what}: shapes {a.shape} {b.shape}, max |dp| {diff:.1e}, same top-5")


def test_health_metadata(pb, stub, c):
    r = stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
    check(r.live is True, "ServerLive: live")
    r = stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
    check(r.ready is True, "ServerReady: ready")
    r = stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10)
    check(r.ready is True, "ModelReady: ready")
    r = stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="1"), timeout=10)
    check(r.ready is True, "ModelReady version 1: ready")
    check_code(rpc_error(stub.ModelReady, pb.ModelReadyRequest(name="nope"), timeout=10), grpc.StatusCode.NOT_FOUND,
               "ModelReady of an unknown model", "unknown model 'nope'")
    check_code(rpc_error(stub.ModelReady, pb.ModelReadyRequest(name=MODEL, version="2"), timeout=10),
               grpc.StatusCode.NOT_FOUND, "ModelReady of an unknown version", "no version '2'")
    r = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    s, _, j = c.get("/v2")
    check(r.name == j["name"] == "effnetd" and r.version == j["version"] and list(r.extensions) == j["extensions"],
          f"ServerMetadata = GET /v2 ({r.name} {r.version} {list(r.extensions)})")
    r = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10)
    s, _, j = c.get(f"/v2/models/{MODEL}")
    got = {"name": r.name, "versions": list(r.versions), "platform": r.platform,
           "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in r.inputs],
           "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in r.outputs]}
    check(s == 200 and got == j, f"ModelMetadata = GET /v2/models/{MODEL} ({got})")
    r = stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10).config
    s, _, j = c.get(f"/v2/models/{MODEL}/config")
    got = {"name": r.name, "platform": r.platform, "backend": r.backend, "max_batch_size": r.max_batch_size,
           "input": [{"name": i.name, "data_type": pb.DataType.Name(i.data_type),
                      "format": pb.ModelInput.Format.Name(i.format), "dims": list(i.dims)} for i in r.input],
           "output": [{"name": o.name, "data_type": pb.DataType.Name(o.data_type), "dims": list(o.dims)}
                      for o in r.output],
           "dynamic_batching": {"preferred_batch_size": list(r.dynamic_batching.preferred_batch_size),
                                "max_queue_delay_microseconds": r.dynamic_batching.max_queue_delay_microseconds},
           "parameters": {k: {"string_value": v.string_value} for k, v in r.parameters.items()},
           "num_versions": r.version_policy.latest.num_versions}
    want = {k: j.get(k) for k in ("name", "platform", "backend", "max_batch_size", "input", "output",
                                   "dynamic_batching", "parameters")}
    want["num_versions"] = j.get("version_policy", {}).get("latest", {}).get("num_versions")
    check(s == 200 and got == want and r.parameters["weights_trained"].string_value == "false",
          f"ModelConfig = GET /v2/models/{MODEL}/config ({got})")
    check_code(rpc_error(stub.ModelConfig, pb.ModelConfigRequest(name="x"), timeout=10), grpc.StatusCode.NOT_FOUND,
               "ModelConfig of an unknown model")


def test_infer(pb, stub, c, x, photos, names, v1):
    # Raw FP32, typed FP32, and REST /v2 binary for the same tensors.
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "FP32", x, request_id="raw-1"), timeout=120)
    raw = gc.fp32_output(r)
    check(r.model_name == MODEL and r.model_version == "1" and r.id == "raw-1" and r.outputs[0].name == "probabilities"
          and r.outputs[0].datatype == "FP32" and list(r.outputs[0].shape) == [len(names), CLASSES],
          f"ModelInfer raw FP32: name, version, id, output {r.outputs[0].name} {list(r.outputs[0].shape)}")
    check(bool(np.all(np.abs(raw.sum(1) - 1) < 1e-4)), "raw FP32: each image's probabilities sum to 1")
    for i, n in enumerate(names):
        scores, order = v1[n]
        top = [int(k) for k in np.argsort(-raw[i], kind="stable")[:5]]
        diff = max(abs(float(raw[i][k]) - scores[k]) for k in order)
        check(top == order and diff <= 2e-5, f"gRPC FP32 {n}: top-5 {top} = /v1's {order}, max |dp| {diff:.1e}")
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "FP32", x, raw=False), timeout=120)
    same_probs(gc.fp32_output(r), raw, "typed fp32_contents = raw_input_contents")
    res = c.infer(MODEL, [Tensor("input", "FP32", x)], outputs=[Output("probabilities", binary=True)])
    same_probs(res.output("probabilities"), raw, "gRPC FP32 = REST /v2 binary FP32")

    # BYTES: encoded images, raw and typed, against REST's BYTES answer.
    imgs = [photos[n] for n in names]
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "BYTES", imgs), timeout=120)
    braw = gc.fp32_output(r)
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "BYTES", imgs, raw=False), timeout=120)
    same_probs(gc.fp32_output(r), braw, "BYTES typed bytes_contents = raw")
    res = c.infer(MODEL, [Tensor("input", "BYTES", imgs)], outputs=[Output("probabilities", binary=True)])
    same_probs(res.output("probabilities"), braw, "gRPC BYTES images = REST /v2 BYTES")
    same_probs(braw, raw, "BYTES images decoded on the server = their FP32 tensors", tol=2e-5)

    # Classification: "score:index:label" strings, as REST's.
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "BYTES", imgs, classification=5), timeout=120)
    got = gc.bytes_output(r)
    res = c.infer(MODEL, [Tensor("input", "BYTES", imgs)],
                  outputs=[Output("probabilities", binary=True, classification=5)])
    want = res.output("probabilities")
    ok = r.outputs[0].datatype == "BYTES" and list(r.outputs[0].shape) == [len(names), 5] and len(got) == 5 * len(names)
    for g, w in zip(got, want or []):
        gs, ws = g.decode().split(":", 2), w.decode().split(":", 2)
        ok = ok and gs[1:] == ws[1:] and abs(float(gs[0]) - float(ws[0])) <= 2e-6
    check(ok and len(got) == len(want or []), f"classification 5: BYTES [N,5] like REST's ({got[:2]} / {(want or [])[:2]})")
    return raw


def test_errors(pb, stub, x, jpeg):
    E = grpc.StatusCode
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, "nope", "FP32", x[:1]), timeout=30), E.NOT_FOUND,
               "unknown model", "unknown model 'nope'")
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, MODEL, "FP32", x[:1], version="7"), timeout=30),
               E.NOT_FOUND, "unknown version", "no version '7'")
    bad = x[:1, :, :100, :]
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, MODEL, "FP32", np.ascontiguousarray(bad)), timeout=30),
               E.INVALID_ARGUMENT, "wrong shape", "does not match the model's [-1,3,224,224]")
    req = gc.infer_request(pb, MODEL, "FP32", x[:1], shape=[2, 3, SIZE, SIZE])
    check_code(rpc_error(stub.ModelInfer, req, timeout=30), E.INVALID_ARGUMENT, "shape says 2 images, data holds 1",
               "raw_input_contents")
    req = gc.infer_request(pb, MODEL, "FP32", x[:1])
    req.inputs[0].datatype = "INT8"
    check_code(rpc_error(stub.ModelInfer, req, timeout=30), E.INVALID_ARGUMENT, "wrong datatype", "datatype INT8")
    req = gc.infer_request(pb, MODEL, "FP32", x[:1])
    req.outputs[0].name = "logits"
    check_code(rpc_error(stub.ModelInfer, req, timeout=30), E.NOT_FOUND, "unknown output", "'logits'")
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, MODEL, "BYTES", [b"not an image"]), timeout=30),
               E.INVALID_ARGUMENT, "BYTES that are no image", "image 1")
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, MODEL, "BYTES", [jpeg] * 5), timeout=30),
               E.RESOURCE_EXHAUSTED, "more images than max-images", "limit is 4")
    big = np.zeros((5, 3, SIZE, SIZE), dtype=np.float32)      # 3 MB of tensor, plus a 2 MB pad below
    req = gc.infer_request(pb, MODEL, "FP32", big[:4])
    req.id = "x" * (2 << 20)
    check_code(rpc_error(stub.ModelInfer, req, timeout=30), E.RESOURCE_EXHAUSTED, "a message over v2-max-body-bytes",
               f"more than the limit of {MAX_BODY}")
    check_code(rpc_error(stub.ModelInfer, gc.infer_request(pb, MODEL, "FP32", x[:1]), timeout=0.0005),
               E.DEADLINE_EXCEEDED, "a deadline too short for inference")
    check(stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live, "the server answers after the errors")


def test_concurrency(pb, stub, x, raw):
    """16 requests at once (futures, as tritonclient's async_infer): each
    answered, each with its own image's answer."""
    futures = [(i % len(x), stub.ModelInfer.future(gc.infer_request(pb, MODEL, "FP32", x[i % len(x):i % len(x) + 1],
                                                                     request_id=f"c{i}"), timeout=300))
               for i in range(16)]
    ok = 0
    for i, (k, f) in enumerate(futures):
        try:
            r = f.result()
            p = gc.fp32_output(r)[0]
            if r.id == f"c{i}" and float(np.max(np.abs(p - raw[k]))) <= 2e-5:
                ok += 1
        except grpc.RpcError as e:
            print(f"     c{i}: {e.code()} {e.details()}")
    check(ok == 16, f"16 concurrent ModelInfer calls: {ok} answered with their own image's probabilities")


def test_stream(pb, stub, x, raw):
    """ModelStreamInfer: one answer per request, by id; a bad request's
    error_message does not end the stream."""
    reqs = [gc.infer_request(pb, MODEL, "FP32", x[i % len(x):i % len(x) + 1], request_id=f"s{i}") for i in range(6)]
    reqs.insert(3, gc.infer_request(pb, "nope", "FP32", x[:1], request_id="bad"))
    answers = list(stub.ModelStreamInfer(iter(reqs), timeout=300))
    by_id = {a.infer_response.id: a for a in answers if not a.error_message}
    errors = [a.error_message for a in answers if a.error_message]
    good = sum(1 for i in range(6) if f"s{i}" in by_id and
               float(np.max(np.abs(gc.fp32_output(by_id[f"s{i}"].infer_response)[0] - raw[i % len(x)]))) <= 2e-5)
    check(len(answers) == 7 and good == 6, f"a stream of 7 requests: 7 answers, 6 right ({len(answers)}, {good})")
    check(len(errors) == 1 and "unknown model 'nope'" in errors[0], f"the bad one's error_message ({errors})")
    check(list(stub.ModelStreamInfer(iter([]), timeout=30)) == [], "an empty stream ends with no answer")


def test_compression(d, port, pb, stub, x, raw):
    """grpc-encoding gzip and deflate: grpcio's compressed requests get the
    answers of uncompressed ones; an unknown encoding is UNIMPLEMENTED with
    grpc-accept-encoding; a zip bomb (a small gzip message that inflates
    past the message limit, and past the daemon's peak RSS so far) is
    refused without its peak RSS (VmHWM) growing by what it would inflate
    to."""
    for comp in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        r = stub.ModelInfer(gc.infer_request(pb, MODEL, "FP32", x[:2], request_id="z"), timeout=120, compression=comp)
        same_probs(gc.fp32_output(r), raw[:2], f"ModelInfer compressed with {comp.name}")
    reqs = [gc.infer_request(pb, MODEL, "FP32", x[i:i + 1], request_id=f"z{i}") for i in range(2)]
    answers = list(stub.ModelStreamInfer(iter(reqs), timeout=120, compression=grpc.Compression.Gzip))
    check(len(answers) == 2 and all(not a.error_message for a in answers), "a gzip stream of 2 requests: 2 answers")

    # An encoding the server does not know: the answer comes at the request's
    # headers, trailers-only, which curl shows. No body is sent: with one,
    # the server resets the stream (NO_ERROR) after answering, and curl may
    # report that reset instead of the headers.
    p = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge",
                        "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-encoding: br",
                        "--data-binary", "", f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ServerLive"],
                       capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace").lower()
    check("grpc-status: 12" in out and "grpc-accept-encoding: identity,deflate,gzip" in out,
          f"grpc-encoding br: UNIMPLEMENTED naming the encodings taken ({out.split()[:12]}, curl {p.returncode})")

    # 1 GiB of zeros in 1 MiB of gzip, against v2-max-body-bytes (4 MB):
    # more than the daemon's peak so far, so that inflating it would show.
    import zlib
    z, mib = zlib.compressobj(9, zlib.DEFLATED, 16 + 15), bytes(1 << 20)     # gzip, a MiB at a time
    bomb = b"".join(z.compress(mib) for _ in range(1024)) + z.flush()
    hwm0 = dm.status_kb(d.proc.pid, "VmHWM")
    h = gc.RawH2(port)
    h.start()
    h.headers(1, gc.grpc_headers("/inference.GRPCInferenceService/ModelInfer", [("grpc-encoding", "gzip")]))
    body = b"\x01" + struct.pack(">I", len(bomb)) + bomb
    for i in range(0, len(body), 16000):
        h.send(gc.frame(gc.DATA, gc.END_STREAM if i + 16000 >= len(body) else 0, 1, body[i:i + 16000]))
    got = h.frames_until(lambda f: f and f[2] == 1 and (f[0] == gc.RST_STREAM or
                                                        (f[0] == gc.HEADERS and f[1] & gc.END_STREAM)))
    h.close()
    grown = (dm.status_kb(d.proc.pid, "VmHWM") - hwm0) / 1024
    check(got and got[-1] is not None and grown < 64,
          f"a {len(bomb) >> 10} KB gzip bomb of 1 GiB: its stream ended, VmHWM grew {grown:.1f} MiB (< 64; "
          f"was {hwm0 >> 10} MiB)")
    big = gc.infer_request(pb, MODEL, "FP32", x[:1])
    big.id = "0" * (8 << 20)     # compresses to little, inflates past the limit
    check_code(rpc_error(stub.ModelInfer, big, timeout=60, compression=grpc.Compression.Gzip),
               grpc.StatusCode.RESOURCE_EXHAUSTED, "a gzip message inflating past v2-max-body-bytes",
               "inflates past the limit")
    check(stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live, "the server answers after the bomb")


def test_hostile(d, port, pb, stub):
    path = "/inference.GRPCInferenceService/ServerLive"
    # Streams past grpc-max-streams (2): refused by the server.
    h = gc.RawH2(port)
    h.start()
    for sid in (1, 3, 5):
        h.headers(sid, gc.grpc_headers(path))      # no message yet: the streams stay open
    got = h.frames_until(lambda f: f and f[0] == gc.RST_STREAM and f[2] == 5, limit=50)
    rst = [f for f in got if f and f[0] == gc.RST_STREAM and f[2] == 5]
    check(bool(rst) and struct.unpack(">I", rst[0][3])[0] == 7,
          f"a third stream past grpc-max-streams 2: RST_STREAM REFUSED_STREAM ({[f[:3] for f in got if f][-3:]})")
    h.message(1, b"")
    got = h.frames_until(lambda f: f and f[2] == 1 and f[0] in (gc.HEADERS, gc.RST_STREAM) and f[1] & gc.END_STREAM)
    check(any(f and f[2] == 1 and f[0] == gc.HEADERS and f[1] & gc.END_STREAM for f in got),
          "the streams within the limit are answered")
    h.close()
    # A header list over the limit (16 KiB): that stream is reset, the
    # connection goes on.
    h = gc.RawH2(port)
    h.start()
    h.headers(1, gc.grpc_headers(path, [("x-big", "a" * 20000)]), end_stream=True)
    got = h.frames_until(lambda f: f and f[2] == 1 and f[0] in (gc.RST_STREAM, gc.GOAWAY) or (f and f[0] == gc.GOAWAY))
    check(any(f and f[0] in (gc.RST_STREAM, gc.GOAWAY) for f in got), "20 KB of headers: the stream is refused")
    h.close()
    # Rapid reset: streams opened and reset at once do not pile up work.
    h = gc.RawH2(port)
    h.start()
    infer = "/inference.GRPCInferenceService/ServerLive"
    for i in range(200):
        sid = 1 + 2 * i
        h.headers(sid, gc.grpc_headers(infer))
        h.send(gc.frame(gc.RST_STREAM, 0, sid, struct.pack(">I", 8)))
    h.close()
    check(stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live, "200 streams opened and reset: the server answers")
    # A silent connection is closed after body-timeout (2 s), as is one
    # whose message never ends.
    t0 = time.monotonic()
    h = gc.RawH2(port)
    got = h.frames_until(lambda f: False, limit=10)
    took = time.monotonic() - t0
    check(got[-1] is None and 1.5 <= took <= 10, f"a connection that sends no preface is closed after {took:.1f} s")
    h.close()
    h = gc.RawH2(port)
    h.start()
    h.headers(1, gc.grpc_headers("/inference.GRPCInferenceService/ModelInfer"))
    h.send(gc.frame(gc.DATA, 0, 1, b"\x00" + struct.pack(">I", 1000) + b"x" * 10))
    t0 = time.monotonic()
    got = h.frames_until(lambda f: f and f[2] == 1 and (f[0] == gc.RST_STREAM or (f[0] == gc.HEADERS and f[1] & gc.END_STREAM)))
    took = time.monotonic() - t0
    check(got and got[-1] is not None and 1.5 <= took <= 10,
          f"a message that stops after 10 of 1000 bytes: its stream ends after {took:.1f} s")
    h.close()
    # More connections than max-connections (8): the rest are closed.
    socks = []
    for _ in range(12):
        s = gc.RawH2(port, timeout=5)
        s.start()
        socks.append(s)
    time.sleep(0.5)
    closed = 0
    for s in socks:
        s.sock.settimeout(1)
        f = s.frames_until(lambda f: f and f[0] == gc.SETTINGS, limit=5)
        closed += f[-1] is None
        s.close()
    check(closed >= 4, f"12 connections past max-connections 8: {closed} closed at once")


def test_metrics_log(d, n_infer_ok):
    s, _, body = d.request("GET", "/metrics")
    text = body.decode()
    m = re.search(r'effnetd_grpc_requests_total\{protocol="grpc",method="ModelInfer",code="OK"\} (\d+)', text)
    check(m is not None and int(m.group(1)) >= n_infer_ok,
          f"/metrics counts gRPC ModelInfer OK with protocol=\"grpc\" ({m.group(0) if m else None})")
    check(re.search(r'effnetd_grpc_requests_total\{protocol="grpc",method="ModelInfer",code="NOT_FOUND"\} [1-9]', text)
          is not None, "/metrics counts NOT_FOUND answers")
    check(re.search(r'effnetd_grpc_refusals_total\{reason="max_connections"\} [1-9]', text) is not None,
          "/metrics counts connections refused")
    log = d.log_text()
    check(re.search(r'"GRPC /inference\.GRPCInferenceService/ModelInfer" 200', log) is not None,
          "the access log has gRPC calls")
    check(re.search(r'"GRPC /inference\.GRPCInferenceService/ModelInfer" 404 NOT_FOUND', log) is not None,
          "the access log names the gRPC status of errors")


def test_reload(d, pb, stub, x, raw):
    """SIGHUP: the model is reloaded (the same weights) while gRPC calls go
    on; calls after it are served by the new version, with the same answers."""
    before = d.log_text().count("reloaded: now serving")
    futures = [stub.ModelInfer.future(gc.infer_request(pb, MODEL, "FP32", x[:1]), timeout=300) for _ in range(2)]
    d.proc.send_signal(1)
    ok = 0
    for f in futures:
        try:
            ok += float(np.max(np.abs(gc.fp32_output(f.result())[0] - raw[0]))) <= 2e-5
        except grpc.RpcError as e:
            print(f"     during the reload: {e.code()} {e.details()}")
    deadline = time.monotonic() + 300
    while d.log_text().count("reloaded: now serving") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    reloaded = d.log_text().count("reloaded: now serving") > before
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "FP32", x[:1]), timeout=300)
    check(reloaded and ok == 2 and float(np.max(np.abs(gc.fp32_output(r)[0] - raw[0]))) <= 2e-5
          and stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready,
          f"SIGHUP reload: calls during it answered ({ok} of 2), the model ready and the same after it")


def test_drain(d, pb, stub, x):
    """SIGTERM with calls in flight (2: grpc-max-streams; the client holds
    back more): they are answered; a new call is refused."""
    futures = [stub.ModelInfer.future(gc.infer_request(pb, MODEL, "FP32", x[:1]), timeout=120) for _ in range(2)]
    time.sleep(0.05)
    d.proc.send_signal(15)
    time.sleep(0.3)
    code, _ = rpc_error(stub.ServerReady, pb.ServerReadyRequest(), timeout=10)
    check(code == grpc.StatusCode.UNAVAILABLE, f"draining: a new call is refused ({code})")
    ok = 0
    for f in futures:
        try:
            f.result()
            ok += 1
        except grpc.RpcError as e:
            print(f"     in flight at SIGTERM: {e.code()} {e.details()}")
    check(ok == 2, f"2 calls in flight at SIGTERM: {ok} answered")
    check(d.proc.wait(60) == 0, "exit 0 after the drain")


def test_memory(effnetd, weights, workdir):
    """What slow uploads make the server hold is bounded by memory-budget,
    measured in the daemon's RSS: 16 connections x 4 streams each send
    1 MB of a message announced as 4 MB and stall (64 MB asked for), with
    an 8 MiB budget. Without the charges the daemon would hold all 64 MB."""
    budget = 8 << 20
    # Under AddressSanitizer freed memory would wait in its quarantine (none
    # here, so that RSS means what it does in a normal build), and every
    # allocation carries redzones and shadow: the bound is scaled by 1.5.
    asan = "asan" in os.environ.get("MESON_BUILD_ROOT", "") or bool(os.environ.get("ASAN_OPTIONS"))
    env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").lstrip(":")}
    bound = 32 * (1.5 if asan else 1.0)
    d = dm.Daemon(effnetd, weights, workdir, "--grpc-listen", "127.0.0.1:0", "--memory-budget", budget,
                  "--max-client-share", budget, "--v2-max-body-bytes", 4000000, "--max-body-bytes", 2000000,
                  "--grpc-max-streams", 4, "--body-timeout", 60, name="effnetd-memory", env=env)
    conns = []
    try:
        port = grpc_port(d)
        rss0 = dm.status_kb(d.proc.pid, "VmRSS")
        chunk = b"\x00" + struct.pack(">I", 4000000) + b"\x5a" * (16384 - 5)
        body = b"\x5a" * 16384
        cut = 0
        for _ in range(16):
            h = gc.RawH2(port)
            conns.append(h)
            try:
                h.start()
                h.frames_until(lambda f: f and f[0] == gc.SETTINGS and not f[1] & gc.ACK, limit=10)
                for sid in (1, 3, 5, 7):
                    h.headers(sid, gc.grpc_headers("/inference.GRPCInferenceService/ModelInfer"))
                    # 1 MB, within the 1 MiB stream window the server announces.
                    h.send(gc.frame(gc.DATA, 0, sid, chunk))
                    for _ in range(60):
                        h.send(gc.frame(gc.DATA, 0, sid, body))
            except (BrokenPipeError, ConnectionResetError):
                # The server may close a connection whose state the budget
                # cannot hold any more: one of the ways it refuses.
                cut += 1
        print(f"     {cut} of 16 connections closed by the server while sending")
        time.sleep(2)
        rss1 = dm.status_kb(d.proc.pid, "VmRSS")
        grown = (rss1 - rss0) / 1024
        s_, _, m = d.request("GET", "/metrics")
        refused = re.search(r'effnetd_memory_refused_total\{limit="budget"\} (\d+)', m.decode())
        refused = int(refused.group(1)) if refused else 0
        check(grown < bound and refused > 0,
              f"64 MB of stalled uploads against an 8 MiB budget: RSS grew {grown:.1f} MiB (< {bound:.0f}), "
              f"{refused} charges refused")
        for h in conns:
            h.close()
        conns = []
        # Everything comes back once the clients are gone.
        charged = dm.wait_until(lambda: (lambda t: int(t.group(1)) == 0 if t else False)(
            re.search(r"effnetd_memory_charged_bytes (\d+)", d.request("GET", "/metrics")[2].decode())), 10)
        check(bool(charged), "the budget is empty again once the connections closed")
    finally:
        for h in conns:
            h.close()
        d.stop()


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

    with tempfile.TemporaryDirectory(prefix="effnetd-grpc-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        d = dm.Daemon(effnetd, weights, workdir, "--grpc-listen", "127.0.0.1:0", "--max-delay-ms", 20,
                      "--max-images", 4, "--v2-max-body-bytes", MAX_BODY, "--grpc-max-streams", 2,
                      "--body-timeout", 2, "--max-connections", 8)
        try:
            port = grpc_port(d)
            check(port is not None, f"the gRPC listener's port is in the log ({port})")
            s, _, b = d.request("GET", "/v1/models")
            pp = dm.parse_json(b)["models"][0]["preprocessing"]
            tensors = {n: preprocess(preprocess_exe, photos_paths[n], pp, workdir) for n in names}
            x = np.stack([tensors[n] for n in names])
            v1 = {}
            for n in names:
                st, _, body = d.classify(photos[n], dm.content_type_of(photos[n]))
                preds = body.get("predictions", []) if st == 200 else []
                v1[n] = ({p["index"]: p["score"] for p in preds}, [p["index"] for p in preds])
            pb, stub = gc.load(workdir, port)
            c = V2Client(d.port)
            test_health_metadata(pb, stub, c)
            raw = test_infer(pb, stub, c, x, photos, names, v1)
            test_errors(pb, stub, x, photos[names[0]])
            test_concurrency(pb, stub, x, raw)
            test_stream(pb, stub, x, raw)
            test_compression(d, port, pb, stub, x, raw)
            test_hostile(d, port, pb, stub)
            test_metrics_log(d, 16)
            test_reload(d, pb, stub, x, raw)
            c.close()
            test_drain(d, pb, stub, x)
        finally:
            if d.proc.poll() is None:
                d.stop()
            if failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-4000:])
        test_memory(effnetd, weights, workdir)
    finish()


if __name__ == "__main__":
    main()
