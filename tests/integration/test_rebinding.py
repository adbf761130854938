#!/usr/bin/python3
"""Loopback is not an open door: what a DNS-rebinding page in a local
browser gets from effnetd.

Usage: test_rebinding.py EFFNETD EFFNET

  - a listener on a loopback address answers 421 (JSON; under /v2 in the
    v2 error form) to a Host that is not a loopback name or address, before
    any work: no classification, no /metrics, no /v1/models; loopback Hosts
    (localhost, 127.0.0.1, [::1], with or without port) and a request
    without Host (HTTP/1.0) are answered;
  - allowed-hosts adds names (and ".domain" for a domain), "*" allows any;
    a bad entry stops the start with a message naming the setting;
  - a listener on another address answers any Host by default, so that
    Kubernetes probes (Host: the pod's address) reach an admin listener on
    0.0.0.0 while the loopback main listener still refuses rebind.example;
  - every answer carries X-Content-Type-Options: nosniff;
  - /v1/models, /v2/models/{m}/config and /metrics name the weights and
    the labels by file name, not by absolute path, unless show-paths.
"""
import http.client
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

REBIND = "rebind.example"


def get(port, path, host, method="GET", body=None, headers=None):
    """(status, headers with lower-case names, body) of one request with
    this Host header."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def loopback_only(d, admin, image, workdir):
    port = d.port
    for path in ("/v1/models", "/metrics", "/healthz", "/", "/v2/models/efficientnetv2-b0/config", "/nope"):
        for host in (REBIND, f"{REBIND}:{port}", "127.0.0.1.nip.io", "10.0.0.1", "localhost.example"):
            s, h, b = get(port, path, host)
            if not check(s == 421, f"Host {host}: GET {path} is 421 ({s})"):
                continue
    s, h, b = get(port, "/v1/models", REBIND)
    err = dm.parse_json(b).get("error", {})
    check(s == 421 and err.get("code") == "misdirected_request" and REBIND in err.get("message", "")
          and "allowed-hosts" in err.get("message", "") and h.get("content-type") == "application/json"
          and "efficientnetv2" not in b.decode(errors="replace"),
          f"421 is a JSON error naming the Host and the setting, and tells nothing of the model ({b[:200]!r})")
    s, h, b = get(port, "/v2/models/efficientnetv2-b0", REBIND)
    v2 = dm.parse_json(b)
    check(s == 421 and isinstance(v2.get("error"), str) and REBIND in v2["error"],
          f"under /v2 the 421 is the v2 error form ({b[:120]!r})")

    images0 = d.metrics().get("effnetd_images_total", 0)
    if image:
        s, h, b = get(port, "/v1/classify", f"{REBIND}:{port}", "POST", image, {"Content-Type": "image/jpeg"})
        check(s == 421 and b'"predictions"' not in b, f"a classify POST with a foreign Host is refused ({s})")
        body, ctype = dm.multipart([("a.jpg", "image/jpeg", image)] * 2)
        s, _, _ = get(port, "/v1/classify", REBIND, "POST", body, {"Content-Type": ctype})
        check(s == 421, f"and a multipart one too ({s})")
        check(d.metrics().get("effnetd_images_total", 0) == images0, "no image was classified for them")

    for host in ("localhost", f"localhost:{port}", "LOCALHOST.", "127.0.0.1", f"127.0.0.1:{port}", "127.9.8.7",
                 "[::1]", f"[::1]:{port}", "app.localhost"):
        s, h, b = get(port, "/v1/models", host)
        check(s == 200 and b'"models"' in b, f"Host {host}: /v1/models is 200 ({s})")
    if image:
        s, h, b = get(port, "/v1/classify", f"localhost:{port}", "POST", image, {"Content-Type": "image/jpeg"})
        check(s == 200 and b'"predictions"' in b, f"a classify POST with Host localhost:{port} is 200 ({s})")
    ans = dm.raw_http(port, b"GET /v1/models HTTP/1.0\r\n\r\n")
    check(ans.startswith(b"HTTP/1.") and b" 200 " in ans.split(b"\r\n")[0],
          f"HTTP/1.0 without Host is answered ({ans[:40]!r})")
    ans = dm.raw_http(port, b"GET /v1/models HTTP/1.0\r\nHost: rebind.example\r\n\r\n")
    check(b" 421 " in ans.split(b"\r\n")[0], f"HTTP/1.0 with a foreign Host is 421 ({ans[:40]!r})")

    if admin:
        check(dm.get_status(admin, "/healthz") == 200, "the admin listener answers Host 127.0.0.1")
        s, _, _ = get(admin, "/metrics", REBIND)
        check(s == 421, f"the loopback admin listener refuses Host {REBIND} too ({s})")

    m = d.metrics()
    check(m.get('effnetd_http_errors_total{code="misdirected_request"}', 0) >= 30
          and m.get('effnetd_http_requests_total{protocol="v1",route="/v1/models",code="421"}', 0) >= 5,
          "421 answers are counted by code and status")


def nosniff(d, image):
    port = d.port
    paths = [("GET", "/v1/models", None, {}), ("GET", "/healthz", None, {}), ("GET", "/readyz", None, {}),
             ("GET", "/metrics", None, {}), ("GET", "/nope", None, {}), ("POST", "/v1/models", b"", {}),
             ("GET", "/v1/classify", None, {}), ("GET", "/v2", None, {}), ("GET", "/v2/health/ready", None, {}),
             ("GET", "/v2/models/efficientnetv2-b0", None, {}), ("GET", "/v2/models/other", None, {}),
             ("POST", "/v1/classify", b"not an image", {"Content-Type": "image/jpeg"}),
             ("POST", "/v1/classify?top_k=0", b"x", {"Content-Type": "image/jpeg"}),
             ("POST", "/v2/models/efficientnetv2-b0/infer", b"{", {"Content-Type": "application/json"}),
             ("GET", "/", None, {})]
    if image:
        paths.append(("POST", "/v1/classify", image, {"Content-Type": "image/jpeg"}))
    for method, path, body, hdrs in paths:
        s, h, b = get(port, path, "localhost", method, body, hdrs)
        check(h.get("x-content-type-options") == "nosniff", f"{method} {path} ({s}): X-Content-Type-Options: nosniff")
    s, h, b = get(port, "/healthz", REBIND)
    check(s == 421 and h.get("x-content-type-options") == "nosniff", "the 421 too")


def no_paths(d, workdir, weights, labels, show):
    s, _, b = d.request("GET", "/v1/models")
    text = b.decode()
    m = dm.parse_json(b)["models"][0]
    w = m["weights"]
    s2, _, b2 = d.request("GET", "/v2/models/efficientnetv2-b0/config")
    s3, _, b3 = d.request("GET", "/metrics")
    info = re.search(r"^effnetd_model_info\{(.*)\} 1$", b3.decode(), re.M)
    info = info.group(1) if info else ""
    params = dm.parse_json(b2).get("parameters", {})
    if not show:
        check(workdir not in text and "path" not in w and w.get("file") == os.path.basename(weights)
              and m["labels"]["source"] == "file:" + os.path.basename(labels),
              f"/v1/models names the files, without their directory ({w}, {m['labels']})")
        check(s2 == 200 and workdir not in b2.decode()
              and params.get("labels_source", {}).get("string_value") == "file:" + os.path.basename(labels),
              f"/v2/models/{{m}}/config names no directory ({params.get('labels_source')})")
        check(workdir not in info and f'weights="{os.path.basename(weights)}"' in info
              and f'labels="file:{os.path.basename(labels)}"' in info,
              f"/metrics' model info names no directory ({info[:200]})")
    else:
        check(w.get("path") == weights and w.get("file") == os.path.basename(weights)
              and m["labels"]["source"] == "file:" + labels,
              f"show-paths: /v1/models has the absolute paths ({w}, {m['labels']})")
        check(f'weights="{weights}"' in info and f'labels="file:{labels}"' in info,
              f"show-paths: so has /metrics ({info[:200]})")


def listening_port(d, what):
    m = re.search(rf"{what} listening on http://[^ ]*:(\d+)", d.log_text())
    return int(m.group(1)) if m else 0


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photo = dm.sample_photos().get("grace_hopper.jpg")
    image = dm.read(photo) if photo else None
    with tempfile.TemporaryDirectory(prefix="effnetd-rebinding-") as workdir:
        workdir = os.path.realpath(workdir)
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        labels = os.path.join(workdir, "labels.txt")
        with open(labels, "w") as f:
            f.write("".join(f"class {i}\n" for i in range(1000)))

        d = dm.Daemon(effnetd, weights, workdir, "--labels", labels, "--admin-listen", "127.0.0.1:0",
                      name="loopback")
        try:
            check("Host names answered: loopback names and addresses only" in d.log_text(),
                  "the log says which Host names are answered")
            loopback_only(d, dm.admin_port(d), image, workdir)
            nosniff(d, image)
            no_paths(d, workdir, weights, labels, show=False)
        finally:
            d.stop()

        d = dm.Daemon(effnetd, weights, workdir, "--labels", labels, "--show-paths", name="show-paths")
        try:
            no_paths(d, workdir, weights, labels, show=True)
        finally:
            d.stop()

        d = dm.Daemon(effnetd, weights, workdir, "--allowed-hosts", "api.example.com, .internal.example",
                      name="allowed")
        try:
            for host, want in (("api.example.com", 200), ("API.example.com:8443", 200), ("internal.example", 200),
                               ("a.b.internal.example:80", 200), ("localhost", 200), ("10.244.1.7:8080", 200),
                               ("[2001:db8::7]:8080", 200), (REBIND, 421), ("example.com", 421),
                               ("api.example.com.evil", 421), ("xinternal.example", 421)):
                s, _, _ = get(d.port, "/healthz", host)
                check(s == want, f"allowed-hosts: Host {host} is {want} ({s})")
        finally:
            d.stop()

        d = dm.Daemon(effnetd, weights, workdir, "--allowed-hosts", "*", name="any")
        try:
            s, _, _ = get(d.port, "/v1/models", REBIND)
            check(s == 200, f"allowed-hosts = *: Host {REBIND} is answered ({s})")
        finally:
            d.stop()

        # Kubernetes: probes send the pod's address as Host to the admin
        # listener on 0.0.0.0; the main listener here stays on loopback.
        d = dm.Daemon(effnetd, weights, workdir, "--admin-listen", "0.0.0.0:0", name="probes")
        try:
            admin = listening_port(d, r"admin \(probes, metrics\)")
            for path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready"):
                s, _, _ = get(admin, path, f"10.244.1.7:{admin}")
                check(s == 200, f"admin on 0.0.0.0: GET {path} with the pod's address as Host is 200 ({s})")
            s, _, _ = get(admin, "/readyz", "effnetd.default.svc.cluster.local")
            check(s == 200, f"admin on 0.0.0.0: a service name as Host is 200 ({s})")
            s, _, _ = get(d.port, "/v1/models", REBIND)
            check(s == 421, f"the main listener on loopback still refuses Host {REBIND} ({s})")
        finally:
            d.stop()

        # A bad list stops the start, naming the setting.
        p = subprocess.run([effnetd, "--weights", weights, "--listen", "127.0.0.1:0", "--allowed-hosts",
                            "api.example.com:8080"], capture_output=True, text=True, timeout=300)
        check(p.returncode != 0 and "allowed-hosts" in p.stderr and "api.example.com:8080" in p.stderr,
              f"allowed-hosts with a port: the start fails naming it (exit {p.returncode}, "
              f"{p.stderr.strip()[-200:]})")
        p = subprocess.run([effnetd, "--check-config", "--weights", weights, "--allowed-hosts", "http://a.example"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and "allowed-hosts" in p.stderr, f"--check-config names it too ({p.stderr.strip()})")
    finish()


if __name__ == "__main__":
    main()
