#!/usr/bin/python3
"""Span export (otlp-endpoint) against a stand-in collector on loopback
(Python's http.server taking POST /v1/traces):

  - HTTP /v1/classify and gRPC ModelInfer with a traceparent: five spans
    (request, decode, queue, infer, answer) in the caller's trace, the
    request's span the one the answer's traceparent names and a child of
    the caller's, the stages its children, each of a duration >= 0, within
    the request and one after the other; the attributes model, version,
    protocol and status;
  - a caller's traceparent without the sampled flag, probes and metadata
    make no spans; what is queued at SIGTERM still goes out;
  - a dead collector (a port nobody listens on) slows no request (median
    latency against a daemon without export) and its spans are counted as
    dropped in /metrics;
  - a collector that accepts the post and never answers holds up the
    daemon's stop by about OTLP_FLUSH_MS only, not its post timeout.

Usage: test_otlp.py EFFNETD EFFNET   (meson passes them)
"""

import http.server
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, failures, finish  # noqa: E402

MODEL = "efficientnetv2-b0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
NAMES = {"request", "decode", "queue", "infer", "answer"}


class Collector:
    """POST /v1/traces on 127.0.0.1: every body's spans, by trace id.
    stall: the handler takes the post and never answers (until close)."""

    def __init__(self, stall=False):
        self.spans = []
        self.posts = 0
        self.lock = threading.Lock()
        self.posted = threading.Event()
        self.release = threading.Event()
        self.errors = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.posts += 1
                outer.posted.set()
                if stall:
                    outer.release.wait(60)
                    return
                try:
                    if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/json":
                        raise ValueError(f"{self.path} {self.headers.get('Content-Type')}")
                    doc = json.loads(body)
                    got = []
                    for rs in doc["resourceSpans"]:
                        res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                        if res.get("service.name") != {"stringValue": "effnetd"}:
                            raise ValueError(f"resource {res}")
                        for ss in rs["scopeSpans"]:
                            got += ss["spans"]
                    with outer.lock:
                        outer.spans += got
                    self.send_response(200)
                except (ValueError, KeyError, TypeError) as e:
                    with outer.lock:
                        outer.errors.append(str(e))
                    self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s.get("traceId") == trace_id]

    def wait_trace(self, trace_id, n=5, timeout=10):
        return dm.wait_until(lambda: len(self.trace(trace_id)) >= n and self.trace(trace_id), timeout) or []

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def grpc_port(d):
    m = re.search(r"gRPC \(KServe v2 GRPCInferenceService\) listening on http://127\.0\.0\.1:(\d+)", d.log_text())
    return int(m.group(1)) if m else None


def check_tree(spans, trace_id, parent_id, span_id, protocol, what):
    """The five spans of one request, as the module's header says."""
    by_name = {s["name"]: s for s in spans}
    check(len(spans) == 5 and set(by_name) == NAMES, f"{what}: five spans {sorted(by_name)} ({len(spans)})")
    if set(by_name) != NAMES:
        return
    root = by_name["request"]
    check(root["traceId"] == trace_id and root["spanId"] == span_id and root.get("parentSpanId") == parent_id
          and root["kind"] == 2,
          f"{what}: the request's span is the answer's ({span_id}), a SERVER child of the caller's ({parent_id})")
    kids = [by_name[n] for n in ("decode", "queue", "infer", "answer")]
    ids = {s["spanId"] for s in spans}
    check(all(k["traceId"] == trace_id and k.get("parentSpanId") == root["spanId"] and k["kind"] == 1
              and re.fullmatch(r"[0-9a-f]{16}", k["spanId"]) for k in kids) and len(ids) == 5,
          f"{what}: decode, queue, infer, answer are INTERNAL children of the request, each with an id of its own")
    t = {s["name"]: (int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])) for s in spans}
    check(all(isinstance(s["startTimeUnixNano"], str) and isinstance(s["endTimeUnixNano"], str) for s in spans)
          and all(b >= a for a, b in t.values()), f"{what}: times are strings, durations >= 0")
    r0, r1 = t["request"]
    check(all(r0 <= t[n][0] and t[n][1] <= r1 for n in NAMES),
          f"{what}: the stages lie within the request ({(r1 - r0) / 1e6:.1f} ms)")
    order = ("decode", "queue", "infer", "answer")
    check(all(t[order[i]][1] <= t[order[i + 1]][0] for i in range(3)),
          f"{what}: the stages follow each other " +
          ", ".join(f"{n} {(t[n][1] - t[n][0]) / 1e6:.2f} ms" for n in order))
    now = time.time_ns()
    check(abs(now - r1) < 120e9, f"{what}: wall-clock times ({(now - r1) / 1e9:.1f} s ago)")
    attrs = {a["key"]: a["value"] for a in root.get("attributes", [])}
    check(attrs.get("model") == {"stringValue": MODEL} and attrs.get("version") == {"intValue": "1"}
          and attrs.get("protocol") == {"stringValue": protocol} and attrs.get("status") == {"intValue": "200"}
          and root.get("status", {}).get("code") == 1, f"{what}: attributes {attrs}, status {root.get('status')}")


def test_tree(d, col, photo, workdir):
    tp = f"00-{TRACE_ID}-{PARENT_ID}-01"
    s, h, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg", "traceparent": tp})
    m = TRACEPARENT_RE.match(h.get("traceparent", ""))
    check(s == 200 and m and m.group(1) == TRACE_ID, f"HTTP: classified in the caller's trace ({s} {m and m.group(0)})")
    spans = col.wait_trace(TRACE_ID)
    check_tree(spans, TRACE_ID, PARENT_ID, m.group(2) if m else "", "http", "HTTP /v1/classify")

    # A trace started here is exported, and its traceparent says so.
    s, h, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg"})
    fresh = h.get("traceparent", "")
    check(s == 200 and TRACEPARENT_RE.match(fresh) and fresh.endswith("-01"),
          f"HTTP without a traceparent: a new trace, marked sampled ({fresh})")
    got = col.wait_trace(fresh.split("-")[1]) if TRACEPARENT_RE.match(fresh) else []
    check(len(got) == 5, f"... and its 5 spans are exported ({len(got)})")

    # Probes, metadata and an unsampled caller make none.
    quiet = "5" * 32
    for path in ("/healthz", "/v1/models", "/metrics"):
        d.request("GET", path, None, {"traceparent": f"00-{quiet}-{PARENT_ID}-01"})
    unsampled = "6" * 32
    d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg",
                                              "traceparent": f"00-{unsampled}-{PARENT_ID}-00"})

    try:
        import grpc  # noqa: F401
        import numpy  # noqa: F401
        import grpcclient as gc
    except ImportError as e:
        print(f"(gRPC part skipped: {e})")
        return
    pb, stub = gc.load(workdir, grpc_port(d))
    gtrace = "7" * 32
    r, call = stub.ModelInfer.with_call(gc.infer_request(pb, MODEL, "BYTES", [photo]),
                                        metadata=(("traceparent", f"00-{gtrace}-{PARENT_ID}-01"),), timeout=120)
    m = TRACEPARENT_RE.match(dict(call.initial_metadata()).get("traceparent", ""))
    check(m and m.group(1) == gtrace, f"gRPC: answered in the caller's trace ({m and m.group(0)})")
    spans = col.wait_trace(gtrace)
    check_tree(spans, gtrace, PARENT_ID, m.group(2) if m else "", "grpc", "gRPC ModelInfer")
    stub.ServerLive(pb.ServerLiveRequest(), metadata=(("traceparent", f"00-{quiet}-{PARENT_ID}-01"),), timeout=10)
    time.sleep(2.5)   # past a batch's wait: whatever came is in
    check(not col.trace(quiet), f"probes, metadata and /metrics make no spans ({len(col.trace(quiet))})")
    check(not col.trace(unsampled), "a caller's traceparent without the sampled flag makes no spans")
    check(not col.errors, f"every post is valid OTLP JSON ({col.errors[:2]})")
    mt = d.metrics()
    check(mt.get("effnetd_otlp_spans_exported_total", 0) >= 10 and mt.get("effnetd_otlp_spans_dropped_total") == 0,
          f"/metrics: {mt.get('effnetd_otlp_spans_exported_total')} spans exported, "
          f"{mt.get('effnetd_otlp_spans_dropped_total')} dropped")


def test_flush_at_stop(d, col, photo):
    """A request answered just before SIGTERM: its spans still go out."""
    last = "8" * 32
    s, _, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg",
                                                        "traceparent": f"00-{last}-{PARENT_ID}-01"})
    t0 = time.monotonic()
    code = d.stop()
    took = time.monotonic() - t0
    check(s == 200 and code == 0 and len(col.trace(last)) == 5,
          f"the spans queued at SIGTERM are sent before the exit ({len(col.trace(last))} spans, {took:.2f} s)")


def latencies(d, photo, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s, _, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg"})
        out.append(time.perf_counter() - t0)
        if s != 200:
            return None
    return out


def test_dead(effnetd, weights, workdir, photo):
    """No export against a dead collector, in turns, so that both see the
    same load of the machine."""
    common = ["--max-delay-ms", "0", "--max-batch", "1"]
    plain = dm.Daemon(effnetd, weights, workdir, *common, name="effnetd-plain")
    dead = dm.Daemon(effnetd, weights, workdir, *common, "--otlp-endpoint", f"http://127.0.0.1:{dm.free_port()}",
                     "--otlp-queue", "2", name="effnetd-dead")
    try:
        a, b = [], []
        for _ in range(5):
            a += latencies(plain, photo, 6) or [1e9]
            b += latencies(dead, photo, 6) or [1e9]
        ma, mb = statistics.median(a), statistics.median(b)
        check(mb <= ma * 1.25 + 0.005,
              f"a dead collector slows no request: median {mb * 1e3:.1f} ms against {ma * 1e3:.1f} ms without export")
        mt = dm.wait_until(lambda: (lambda m: m.get("effnetd_otlp_spans_dropped_total", 0) > 0 and m)(dead.metrics()),
                           10)
        mt = mt or dead.metrics()
        check(mt.get("effnetd_otlp_spans_dropped_total", 0) >= 5 * 20 and mt.get("effnetd_otlp_export_failures_total", 0)
              >= 1 and mt.get("effnetd_otlp_spans_exported_total") == 0,
              f"its spans are dropped and counted: {mt.get('effnetd_otlp_spans_dropped_total')} dropped, "
              f"{mt.get('effnetd_otlp_export_failures_total')} failed posts")
        t0 = time.monotonic()
        code = dead.stop()
        check(code == 0 and time.monotonic() - t0 < 5,
              f"it stops at once ({time.monotonic() - t0:.2f} s)")
    finally:
        for x in (plain, dead):
            if x.proc.poll() is None:
                x.stop()
        if failures:
            print("---- effnetd-dead log (tail) ----\n" + dead.log_text()[-3000:])


def test_stalled(effnetd, weights, workdir, photo):
    col = Collector(stall=True)
    d = dm.Daemon(effnetd, weights, workdir, "--otlp-endpoint", col.url, name="effnetd-stalled")
    try:
        t0 = time.perf_counter()
        for _ in range(3):
            s, _, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg"})
        check(s == 200, f"requests are answered while the collector hangs ({time.perf_counter() - t0:.2f} s)")
        check(col.posted.wait(10), "the collector took a post and does not answer it")
        for _ in range(3):
            s, _, _ = d.request("POST", "/v1/classify", photo, {"Content-Type": "image/jpeg"}, timeout=10)
        check(s == 200, "and still while a post hangs")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            code = d.proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        # The post would last up to its timeout (5 s); the stop cuts it after 1 s.
        check(code == 0 and took < 3.0, f"a hanging collector holds up the stop by {took:.2f} s (bound 3 s)")
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        col.close()
        if failures:
            print("---- effnetd-stalled log (tail) ----\n" + d.log_text()[-3000:])


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        sys.stderr.write("SKIP: sample photo missing (python3-matplotlib)\n")
        sys.exit(dm.SKIP)
    photo = dm.read(photos["grace_hopper.jpg"])
    with tempfile.TemporaryDirectory(prefix="effnetd-otlp-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        col = Collector()
        d = dm.Daemon(effnetd, weights, workdir, "--otlp-endpoint", col.url + "/", "--grpc-listen", "127.0.0.1:0",
                      "--max-delay-ms", "5")
        try:
            check("spans of inference requests to" in d.log_text(), "the export is logged at start")
            test_tree(d, col, photo, workdir)
            test_flush_at_stop(d, col, photo)
        finally:
            if d.proc.poll() is None:
                d.stop()
            col.close()
            if failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-4000:])
        for url in ("ftp://127.0.0.1:1", "http://"):
            bad = subprocess.run([effnetd, "--weights", weights, "--listen", "127.0.0.1:0", "--otlp-endpoint", url],
                                 capture_output=True, text=True, timeout=120)
            check(bad.returncode != 0 and "otlp-endpoint" in bad.stderr,
                  f"otlp-endpoint {url} is refused ({bad.returncode}, {bad.stderr.strip()[-120:]!r})")
        test_dead(effnetd, weights, workdir, photo)
        test_stalled(effnetd, weights, workdir, photo)
    finish()


if __name__ == "__main__":
    main()
