#!/usr/bin/python3
"""The server against its API reference, docs/openapi.yaml: every route the
server has is documented and every documented path exists; each documented
(path, method, status) that can be provoked here is, and the answer's
content type, headers (X-Request-Id, Retry-After) and JSON body match the
documented schema (a small JSON Schema validator: type, enum, required,
properties, additionalProperties, items, min/max, oneOf, $ref).

Usage: test_openapi.py EFFNETD EFFNET
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
from daemon import check, finish  # noqa: E402

try:
    import yaml
except ImportError:
    print("SKIP: needs python3-yaml")
    sys.exit(dm.SKIP)

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = yaml.safe_load(open(os.path.join(SOURCE_ROOT, "docs", "openapi.yaml")))
# Statuses documented but not provoked here (covered by test_effnetd.py).
NOT_PROVOKED = {("/v1/classify", "post", "500"), ("/v1/classify", "post", "504")}
V2_INFER_PATHS = ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer")
NOT_PROVOKED |= {(p, "post", st) for p in V2_INFER_PATHS for st in ("500", "504")}
METHODS = ("get", "put", "post", "delete", "head", "patch")
MODEL = "efficientnetv2-b0"
# The /v2 routes of the server (KServe v2 and Triton's extensions).
# A one-model daemon cannot load or unload (tests/integration/test_repository.py does).
NOT_PROVOKED |= {(f"/v2/repository/models/{{model}}/{a}", "post", "200") for a in ("load", "unload")}
V2_PATHS = {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index",
            "/v2/repository/models/{model}/load", "/v2/repository/models/{model}/unload"} | {
    base + tail for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    for tail in ("", "/ready", "/config", "/infer")}


def template_of(path):
    """The documented path of a /v2 model path: /v2/models/x/versions/1/ready
    -> /v2/models/{model}/versions/{version}/ready."""
    m = re.fullmatch(r"/v1/models/([^/]+)(/versions/[^/]+)?/classify", path)
    if m:
        return "/v1/models/{model}" + ("/versions/{version}" if m.group(2) else "") + "/classify"
    m = re.fullmatch(r"/v2/repository/models/([^/]+)/(load|unload)", path)
    if m:
        return "/v2/repository/models/{model}/" + m.group(2)
    m = re.fullmatch(r"/v2/models/([^/]+)(/versions/[^/]+)?(/ready|/config|/infer)?", path)
    if not m:
        return path
    return "/v2/models/{model}" + ("/versions/{version}" if m.group(2) else "") + (m.group(3) or "")


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        cur = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            cur = cur[part]
        node = cur
    return node


def validate(value, schema, where="$"):
    """Errors of value against an OpenAPI 3.0 schema, as a list of strings."""
    s = resolve(schema)
    if "oneOf" in s:
        ok = [i for i, sub in enumerate(s["oneOf"]) if not validate(value, sub, where)]
        return [] if len(ok) == 1 else [f"{where}: matches {len(ok)} of oneOf"]
    errs = []
    t = s.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{where}: not an integer"]
    if t == "number" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return [f"{where}: not a number"]
    if t in types and not isinstance(value, types[t]):
        return [f"{where}: not {t}"]
    if "enum" in s and value not in s["enum"]:
        errs.append(f"{where}: {value!r} not in {s['enum']}")
    if "minimum" in s and value < s["minimum"] or "maximum" in s and value > s["maximum"]:
        errs.append(f"{where}: {value} out of range")
    if t == "object":
        for k in s.get("required", []):
            if k not in value:
                errs.append(f"{where}: missing {k}")
        props = s.get("properties", {})
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], f"{where}.{k}")
            elif s.get("additionalProperties") is False:
                errs.append(f"{where}: unexpected {k}")
    if t == "array":
        if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", 1 << 30):
            errs.append(f"{where}: {len(value)} items")
        for i, v in enumerate(value):
            errs += validate(v, s.get("items", {}), f"{where}[{i}]")
    return errs


seen = set()


def conforms(path, method, status, headers, body, what):
    """Checks one answer against the documented response."""
    ops = SPEC["paths"].get(path, {})
    op = ops.get(method)
    if op is None and status == 405 and ops:
        # A method the path does not have: the 405 documented on its operation.
        method, op = next((m, o) for m, o in ops.items() if m in METHODS)
    resp = resolve(op["responses"].get(str(status))) if op and str(status) in op["responses"] else None
    if path not in SPEC["paths"]:
        resp = resolve({"$ref": "#/components/responses/NotFound"}) if status == 404 else None
    if not check(resp is not None, f"{what}: {method.upper()} {path} {status} is documented"):
        return
    seen.add((path, method, str(status)))
    ctype = headers.get("content-type", "").split(";")[0]
    content = resp.get("content", {})
    errs = []
    if ctype not in content:
        errs.append(f"content type {ctype} not in {list(content)}")
    for h, spec in resp.get("headers", {}).items():
        if h.lower() not in headers:
            errs.append(f"header {h} missing")
        elif "enum" in resolve(spec).get("schema", {}) and headers[h.lower()] not in resolve(spec)["schema"]["enum"]:
            errs.append(f"header {h}: {headers[h.lower()]!r} not as documented")
    if ctype == "application/json" and ctype in content:
        errs += validate(dm.parse_json(body), content[ctype]["schema"])
    check(not errs, f"{what}: {method.upper()} {path} {status} matches the schema {errs[:3]}")


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        print("SKIP: sample photos missing")
        sys.exit(dm.SKIP)
    jpeg = dm.read(photos["grace_hopper.jpg"])
    help_text = subprocess.run([effnetd, "--help"], capture_output=True, text=True).stdout
    routes = set(re.findall(r"(/[a-z0-9/.{}]*)", help_text.split("Options")[0]))
    routes = {r for r in routes if r.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/ui/")) or r == "/"}
    check(routes == {p for p in SPEC["paths"] if not p.startswith("/v2")},
          f"documented paths = the server's routes ({sorted(routes)})")
    check({p for p in SPEC["paths"] if p.startswith("/v2")} == V2_PATHS
          and "/v2/models/{model}[/versions/1][/ready|/config]" in help_text
          and "/v2/models/{model}[/versions/1]/infer" in help_text,
          "the /v2 routes are documented and in --help")

    with tempfile.TemporaryDirectory(prefix="effnetd-openapi-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        d = dm.Daemon(effnetd, weights, workdir, "--max-body-bytes", 200000, "--max-images", 2, "--max-batch", 2,
                      "--max-delay-ms", 1500)

        def req(method, path, body=None, headers=None, what=""):
            s, h, b = d.request(method.upper(), path, body, headers)
            p = path.split("?")[0]
            if p.startswith("/v2/models/") and s == 200 and h.get("content-type") == "application/octet-stream":
                # A binary answer: its JSON part against the documented schema.
                hl = int(h.get("inference-header-content-length", "0"))
                check(0 < hl <= len(b), f"{what}: Inference-Header-Content-Length {hl} of {len(b)} bytes")
                conforms(template_of(p), method, s, h, b, what or f"{method} {path}")
                errs = validate(dm.parse_json(b[:hl]), {"$ref": "#/components/schemas/V2InferResponse"})
                check(not errs, f"{what}: the JSON part matches V2InferResponse {errs[:3]}")
                return s, h, b
            conforms(template_of(p), method, s, h, b, what or f"{method} {path}")
            return s, h, b

        x = struct.pack("<f", 0.25) * (2 * 3 * 224 * 224)
        head = json.dumps({"id": "o1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 224, 224],
                                                   "parameters": {"binary_data_size": len(x)}}]}).encode()
        hl = {"Inference-Header-Content-Length": str(len(head))}
        head_bin = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                                           "parameters": {"binary_data_size": 2 * (4 + len(jpeg))}}],
                               "outputs": [{"name": "probabilities",
                                            "parameters": {"binary_data": True, "classification": 3}}]}).encode()
        body_bin = head_bin + (struct.pack("<I", len(jpeg)) + jpeg) * 2
        hl_bin = {"Inference-Header-Content-Length": str(len(head_bin))}
        v2_bases = (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1")
        try:
            req("post", "/v1/classify?top_k=3", jpeg, {"Content-Type": "image/jpeg"}, "one image")
            body, ctype = dm.multipart([("a.jpg", "image/jpeg", jpeg), ("b.jpg", "image/jpeg", jpeg)])
            req("post", "/v1/classify", body, {"Content-Type": ctype}, "multipart")
            req("post", "/v1/classify", b"not an image", {"Content-Type": "image/jpeg"}, "garbage")
            req("post", "/v1/classify?top_k=0", jpeg, {"Content-Type": "image/jpeg"}, "bad top_k")
            req("post", "/v1/classify", os.urandom(300000), {"Content-Type": "image/jpeg"}, "too big")
            req("post", "/v1/classify", b"hello", {"Content-Type": "text/plain"}, "text")
            req("get", "/v1/classify", what="wrong method")
            for base in (f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/1"):
                req("post", base + "/classify?top_k=3", jpeg, {"Content-Type": "image/jpeg"}, "one image, by model")
                req("post", base.replace(MODEL, "nope") + "/classify", b"x", {"Content-Type": "image/jpeg"},
                    "unknown model")
            req("post", f"/v1/models/{MODEL}/versions/9/classify", b"x", {"Content-Type": "image/jpeg"},
                "unknown version")
            req("post", "/v2/repository/index", b"", what="repository index")
            for action in ("load", "unload"):
                req("post", f"/v2/repository/models/{MODEL}/{action}", b"{}", what="no repository to control")
            for p in ("/v1/models", "/healthz", "/readyz", "/metrics", "/", "/ui/app.js", "/ui/app.css"):
                req("get", p)
                req("post", p, b"x", {"Content-Type": "text/plain"}, "wrong method")
            req("get", "/no/such/path", what="unknown path")
            for p in ("/v2", "/v2/health/live", "/v2/health/ready"):
                req("get", p)
                req("post", p, b"x", what="wrong method")
            for base in v2_bases:
                for tail in ("", "/ready", "/config"):
                    req("get", base + tail)
                    req("delete", base + tail, what="wrong method")
                    req("get", base.replace(MODEL, "nope") + tail, what="unknown model")
                req("get", f"/v2/models/{MODEL}/versions/9/config", what="unknown version")
                req("post", base + "/infer", head + x, hl, "v2 FP32 binary in, JSON out")
                req("post", base + "/infer", body_bin, hl_bin, "v2 BYTES, binary classification out")
                req("post", base + "/infer", b'{"inputs": 5}', what="v2 malformed")
                req("post", base.replace(MODEL, "nope") + "/infer", head + x, hl, "v2 unknown model")
                req("get", base + "/infer", what="v2 infer wrong method")
                req("post", base + "/infer", json.dumps({"inputs": [{"name": "input", "datatype": "BYTES",
                                                                     "shape": [3], "data": []}]}).encode(),
                    what="v2 N over max-images")
                req("post", base + "/infer", b"{}", {"Content-Encoding": "gzip"}, "v2 compressed")
            s, h, _ = d.request("GET", "/healthz", headers={"X-Request-Id": "openapi-7"})
            check(h.get("x-request-id") == "openapi-7", "X-Request-Id is echoed as documented")
            # 421: every documented operation, from a page that named another Host.
            for p, ops in SPEC["paths"].items():
                path = p.replace("{model}", MODEL).replace("{version}", "1")
                for m in ops:
                    if m in METHODS:
                        req(m, path, b"x" if m == "post" else None, {"Host": "rebind.example"}, "foreign Host")

            # 503: a request waits for its batch to fill while SIGTERM starts the drain.
            held = []
            t = threading.Thread(target=lambda: held.append(d.classify(jpeg)))
            t.start()
            time.sleep(0.3)
            d.proc.send_signal(15)
            time.sleep(0.2)
            req("get", "/readyz", what="draining")
            req("post", "/v1/classify", jpeg, {"Content-Type": "image/jpeg"}, "draining")
            req("get", "/v2/health/ready", what="draining")
            for base in v2_bases:
                req("get", base + "/ready", what="draining")
                req("post", base + "/infer", b"{}", what="draining")
            t.join()
            check(held and held[0][0] == 200, "the held request still gets 200")
        finally:
            if d.proc.poll() is None:
                d.stop()
            else:
                d.proc.wait(60)
    documented = {(p, m, st) for p, ops in SPEC["paths"].items() for m, op in ops.items() if m in METHODS
                  for st in op["responses"]}
    check(documented - seen <= NOT_PROVOKED, f"every documented answer seen (missing {sorted(documented - seen - NOT_PROVOKED)})")
    finish()


if __name__ == "__main__":
    main()
