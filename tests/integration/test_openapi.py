#!/usr/bin/python3
"""The server against its API reference, docs/openapi.yaml: every route the
server has is documented and every documented path exists; each documented
(path, method, status) that can be provoked here is, and the answer's
content type, headers (X-Request-Id, Retry-After) and JSON body match the
documented schema (a small JSON Schema validator: type, enum, required,
properties, additionalProperties, items, min/max, oneOf, $ref).

Usage: test_openapi.py EFFNETD EFFNET
"""

import os
import re
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
        method, op = next(iter(ops.items()))
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
    for h in resp.get("headers", {}):
        if h.lower() not in headers:
            errs.append(f"header {h} missing")
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
    routes = set(re.findall(r"(/[a-z0-9/]+)", help_text.split("Options")[0]))
    routes = {r for r in routes if r.startswith(("/v1/", "/healthz", "/readyz", "/metrics"))}
    check(routes == set(SPEC["paths"]), f"documented paths = the server's routes ({sorted(routes)})")

    with tempfile.TemporaryDirectory(prefix="effnetd-openapi-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        d = dm.Daemon(effnetd, weights, workdir, "--max-body-bytes", 200000, "--max-images", 2, "--max-batch", 2,
                      "--max-delay-ms", 1500)

        def req(method, path, body=None, headers=None, what=""):
            s, h, b = d.request(method.upper(), path, body, headers)
            conforms(path.split("?")[0], method, s, h, b, what or f"{method} {path}")
            return s, h, b
        try:
            req("post", "/v1/classify?top_k=3", jpeg, {"Content-Type": "image/jpeg"}, "one image")
            body, ctype = dm.multipart([("a.jpg", "image/jpeg", jpeg), ("b.jpg", "image/jpeg", jpeg)])
            req("post", "/v1/classify", body, {"Content-Type": ctype}, "multipart")
            req("post", "/v1/classify", b"not an image", {"Content-Type": "image/jpeg"}, "garbage")
            req("post", "/v1/classify?top_k=0", jpeg, {"Content-Type": "image/jpeg"}, "bad top_k")
            req("post", "/v1/classify", os.urandom(300000), {"Content-Type": "image/jpeg"}, "too big")
            req("post", "/v1/classify", b"hello", {"Content-Type": "text/plain"}, "text")
            req("get", "/v1/classify", what="wrong method")
            for p in ("/v1/models", "/healthz", "/readyz", "/metrics"):
                req("get", p)
                req("post", p, b"x", {"Content-Type": "text/plain"}, "wrong method")
            req("get", "/no/such/path", what="unknown path")
            s, h, _ = d.request("GET", "/healthz", headers={"X-Request-Id": "openapi-7"})
            check(h.get("x-request-id") == "openapi-7", "X-Request-Id is echoed as documented")

            # 503: a request waits for its batch to fill while SIGTERM starts the drain.
            held = []
            t = threading.Thread(target=lambda: held.append(d.classify(jpeg)))
            t.start()
            time.sleep(0.3)
            d.proc.send_signal(15)
            time.sleep(0.2)
            req("get", "/readyz", what="draining")
            req("post", "/v1/classify", jpeg, {"Content-Type": "image/jpeg"}, "draining")
            t.join()
            check(held and held[0][0] == 200, "the held request still gets 200")
        finally:
            if d.proc.poll() is None:
                d.stop()
            else:
                d.proc.wait(60)
    documented = {(p, m, st) for p, ops in SPEC["paths"].items() for m, op in ops.items()
                  for st in op["responses"]}
    check(documented - seen <= NOT_PROVOKED, f"every documented answer seen (missing {sorted(documented - seen - NOT_PROVOKED)})")
    finish()


if __name__ == "__main__":
    main()
