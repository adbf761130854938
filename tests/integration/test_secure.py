#!/usr/bin/python3
"""API keys, TLS and trace context, end to end against the real effnetd.

Usage: test_secure.py EFFNETD EFFNET

Certificates are made here with openssl req/x509 (a CA, two server
certificates, a client CA with a client certificate, and a rogue client).
  - keys: no key, a malformed one and a wrong one get 401 with
    WWW-Authenticate: Bearer, counted by reason; a good key is served; the
    probes and the admin listener need none; unknown paths say 401, not
    404; no key reaches the log; SIGHUP rotates the keys, and a broken
    file keeps those in use;
  - TLS: curl --cacert and Python's ssl are served; openssl s_client with
    TLS 1.1 is refused (the same client speaks TLS 1.1 to openssl
    s_server, so the refusal is the daemon's), 1.2 and 1.3 are accepted;
    SIGHUP replaces the certificate: a connection opened before goes on
    with the old one, new connections get the new one; a key that does not
    match keeps the certificate in use;
  - mutual TLS: no client certificate, or one of another CA, is refused in
    the handshake (TLS 1.2 and 1.3); the CA's client is served;
  - trace context: a valid traceparent's trace-id comes back with a new
    span-id and the sampled flag; an invalid one starts a new trace; both
    ids are in the access log line of the request.
"""
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

try:
    import grpc
    import grpc_tools  # noqa: F401
    import grpcclient as gc  # noqa: E402
except ImportError as e:
    grpc = None
    GRPC_MISSING = str(e)

MODEL = "efficientnetv2-b0"

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(w):
    """CA, server certificates a and b (127.0.0.1, localhost), a client CA
    with client certificate, and a self-signed rogue client."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # The extensions that strict verifiers (Python 3.13's default
    # VERIFY_X509_STRICT) require of CAs and leaves.
    for ca in ("ca", "clientca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                "-subj", f"/CN=effnetd test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=w)
    leaf = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" \
           "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    with open(os.path.join(w, "server.ext"), "w") as f:
        f.write(leaf + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(w, "client.ext"), "w") as f:
        f.write(leaf + "extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("a", "ca", "server.ext"), ("b", "ca", "server.ext"), ("client", "clientca", "client.ext"),
                          ("serveronly", "clientca", "server.ext")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=effnetd test {name}", cwd=w)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", ext, cwd=w)
    openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2",
            "-subj", "/CN=effnetd test rogue", "-addext", "extendedKeyUsage=clientAuth", cwd=w)


def context(w, cert=None, min_v=None, max_v=None):
    ctx = ssl.create_default_context(cafile=os.path.join(w, "ca.crt"))
    if cert:
        ctx.load_cert_chain(os.path.join(w, f"{cert}.crt"), os.path.join(w, f"{cert}.key"))
    if min_v:
        ctx.minimum_version = min_v
    if max_v:
        ctx.maximum_version = max_v
    return ctx


def https(port, ctx, method, path, headers=None, body=None):
    """(status, lower-case headers, body) over a new TLS connection."""
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def outcome(port, ctx, path="/healthz"):
    """The status, or the name of the exception that came instead."""
    try:
        return https(port, ctx, "GET", path)[0]
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__


def metrics(port, ctx, key=None):
    status, _, body = https(port, ctx, "GET", "/metrics", {"Authorization": f"Bearer {key}"} if key else {})
    assert status == 200, status
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            values[k] = float(v)
    return values


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def cert_der(w, name):
    with open(os.path.join(w, f"{name}.crt")) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def peer_cert(port, ctx):
    """The sha256 of the certificate a new connection is given."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return fingerprint(s.getpeercert(True))


def grpc_port(d):
    """The TLS gRPC listener's port, from the log."""
    m = re.search(r"gRPC \(KServe v2 GRPCInferenceService\) listening on https://127\.0\.0\.1:(\d+)", d.log_text())
    return int(m.group(1)) if m else None


def h2_context(w, cert=None):
    """A TLS client context that offers ALPN h2, as gRPC clients do."""
    ctx = context(w, cert)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def grpc_creds(w, cert=None):
    def read(name):
        with open(os.path.join(w, name), "rb") as f:
            return f.read()
    if cert:
        return grpc.ssl_channel_credentials(root_certificates=read("ca.crt"), private_key=read(f"{cert}.key"),
                                            certificate_chain=read(f"{cert}.crt"))
    return grpc.ssl_channel_credentials(root_certificates=read("ca.crt"))


def grpc_live(w, port, creds, meta=()):
    """Whether ServerLive answers live over a new channel (creds None:
    plaintext); the RpcError's code otherwise."""
    pb, stub = gc.load(w, port, creds)
    try:
        return stub.ServerLive(pb.ServerLiveRequest(), metadata=meta, timeout=10).live is True
    except grpc.RpcError as e:
        return e.code()


def test_grpc_tls(d, w, ctx, key, photo):
    """gRPC over TLS on the same credentials: grpcio's secure channel is
    served (ServerLive, ModelInfer), a plaintext client and a TLS client
    without ALPN h2 are refused and counted."""
    port = grpc_port(d)
    check(port is not None, f"the gRPC listener says https:// in the log ({port})")
    if port is None:
        return
    auth = (("authorization", f"Bearer {key}"),)
    check(grpc_live(w, port, grpc_creds(w), auth) is True, "gRPC over TLS: ServerLive through grpc.secure_channel")
    pb, stub = gc.load(w, port, grpc_creds(w))
    r = stub.ModelInfer(gc.infer_request(pb, MODEL, "BYTES", [photo]), metadata=auth, timeout=120)
    probs = gc.fp32_output(r)
    check(list(probs.shape) == [1, 1000] and abs(float(probs.sum()) - 1) < 1e-3,
          f"gRPC over TLS: ModelInfer answers {list(probs.shape)}, probabilities summing to {float(probs.sum()):.4f}")
    # An idle TLS connection costs no CPU: the loop does not poll for
    # writing when nothing waits for it (a busy loop took most of a core).
    def cpu_s():
        f = open(f"/proc/{d.proc.pid}/stat").read().rpartition(")")[2].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    c0 = cpu_s()
    time.sleep(2)
    idle = cpu_s() - c0
    check(idle < 0.5, f"an idle gRPC TLS connection: the daemon used {idle:.2f} s of CPU in 2 s")
    before = metrics(d.port, ctx, key).get('effnetd_grpc_refusals_total{reason="tls_handshake"}')
    got = grpc_live(w, port, None)
    check(got is not True, f"a plaintext gRPC channel to the TLS port fails ({got})")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                context(w).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            no_alpn = s.recv(100)
    except (OSError, ssl.SSLError) as e:
        no_alpn = type(e).__name__
    check(not isinstance(no_alpn, bytes) or no_alpn == b"", f"a TLS client without ALPN h2 is refused ({no_alpn!r})")
    ok = dm.wait_until(lambda: metrics(d.port, ctx, key).get(
        'effnetd_grpc_refusals_total{reason="tls_handshake"}', 0) >= (before or 0) + 2, 10)
    check(before is not None and ok, f"failed gRPC handshakes counted (from {before})")
    check(grpc_live(w, port, grpc_creds(w), auth) is True, "gRPC over TLS still served after the refusals")


def wait_log(d, text, since, timeout=120):
    return dm.wait_until(lambda: text in d.log_text()[since:], timeout)


def s_client(port, version, w, seclevel0=True):
    """Whether openssl s_client completes a handshake of that version."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}", "-CAfile",
            os.path.join(w, "ca.crt")]
    if seclevel0:
        args += ["-cipher", "DEFAULT:@SECLEVEL=0"]
    p = subprocess.run(args, input=b"", capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace")
    return p.returncode == 0 and re.search(r"^New, TLSv1\.\d", out, re.M) is not None and "Cipher is (NONE)" not in out


def tls11_control(w):
    """Whether openssl s_client speaks TLS 1.1 at all here: to openssl
    s_server offering only TLS 1.1."""
    port = dm.free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_1", "-cipher",
                            "DEFAULT:@SECLEVEL=0", "-cert", os.path.join(w, "a.crt"), "-key",
                            os.path.join(w, "a.key")],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not dm.wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10):
            return False
        return s_client(port, "tls1_1", w)
    finally:
        srv.kill()
        srv.wait()


def test_keys(d, w, ctx, keys_path, photo):
    port = d.port
    k1, k2 = "k1-" + "a" * 40, "k2-" + "b" * 40
    good = {"Authorization": f"Bearer {k1}"}

    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        check(https(port, ctx, "GET", path)[0] == 200, f"probe {path} needs no key")
    st, h, body = https(port, ctx, "GET", "/v1/models")
    check(st == 401 and h.get("www-authenticate") == "Bearer" and b"unauthenticated" in body,
          f"no key: 401 with WWW-Authenticate: Bearer ({st}, {h.get('www-authenticate')})")
    st, h, _ = https(port, ctx, "GET", "/v1/models", {"Authorization": f"Bearer {k1}x"})
    check(st == 401 and h.get("www-authenticate") == "Bearer", f"wrong key: 401 ({st})")
    st, _, _ = https(port, ctx, "GET", "/v1/models", {"Authorization": f"Basic {k1}"})
    check(st == 401, f"another scheme: 401 ({st})")
    st, _, _ = https(port, ctx, "GET", "/no/such/path")
    check(st == 401, f"an unknown path without a key: 401, not 404 ({st})")
    st, _, _ = https(port, ctx, "GET", "/metrics")
    check(st == 401, f"the main listener's /metrics needs a key ({st})")
    st, _, _ = https(port, ctx, "GET", "/v1/models", {"Authorization": f"bearer {k1}"})
    check(st == 200, f"a good key (scheme in any case): 200 ({st})")
    st, _, body = https(port, ctx, "POST", "/v1/classify", good | {"Content-Type": dm.content_type_of(photo)}, photo)
    check(st == 200 and b"predictions" in body, f"a good key classifies over TLS ({st})")
    st, _, _ = https(port, ctx, "POST", "/v2/models/effnet/infer", {"Authorization": f"Bearer {k2}"}, b"{}")
    check(st == 401, f"/v2 infer with a key not (yet) in the file: 401 ({st})")

    m = metrics(port, ctx, k1)
    fails = {r: m.get('effnetd_auth_failures_total{reason="%s"}' % r) for r in ("missing", "invalid", "malformed")}
    check(fails["missing"] == 3.0 and fails["invalid"] == 2.0, f"refusals counted by reason: {fails}")
    check(m.get('effnetd_auth_failures_total{reason="malformed"}') == 1.0, "malformed credentials counted")
    check(m.get('effnetd_http_requests_total{protocol="v1",route="/v1/models",code="401"}', 0) >= 2,
          "401 answers counted by route")

    # Admin listener: probes and metrics with no key.
    ap = dm.admin_port(d)
    st, _, body = https(ap, ctx, "GET", "/metrics") if ap else (0, {}, b"")
    check(st == 200, "the admin listener's /metrics needs no key (over TLS)")
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
        check(p.returncode == 0, f"promtool check metrics, with the key and TLS families: {p.stdout[-300:]!r}")

    # Rotation: k2 replaces k1 on SIGHUP.
    with open(keys_path + ".new", "w") as f:
        f.write("# rotated\n" + hashlib.sha256(k2.encode()).hexdigest().upper() + "  # the new key\n")
    os.rename(keys_path + ".new", keys_path)
    since = len(d.log_text())
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, "API keys read again", since), "SIGHUP reads the key file again")
    check(https(port, ctx, "GET", "/v1/models", {"Authorization": f"Bearer {k2}"})[0] == 200, "the new key is served")
    check(https(port, ctx, "GET", "/v1/models", good)[0] == 401, "the old key is refused after the rotation")

    # A broken file keeps the keys in use.
    with open(keys_path, "w") as f:
        f.write(hashlib.sha256(k1.encode()).hexdigest() + "\nnot-a-digest\n")
    since = len(d.log_text())
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, "keeping the API keys in use", since), "a broken key file is refused, and the log says why")
    log = d.log_text()[since:]
    check("line 2" in log, "the log names the broken line")
    check(https(port, ctx, "GET", "/v1/models", {"Authorization": f"Bearer {k2}"})[0] == 200,
          "after a broken file the keys in use still serve")
    check(https(port, ctx, "GET", "/v1/models", good)[0] == 401, "and the broken file's key is not taken")
    m = metrics(port, ctx, k2)
    check(m.get('effnetd_auth_key_reloads_total{result="error"}') == 1.0 and
          m.get('effnetd_auth_key_reloads_total{result="ok"}') == 1.0, "key reloads counted by result")
    return k2


def test_tls_versions(d, w, ctx):
    port = d.port
    if shutil.which("curl"):
        p = subprocess.run(["curl", "-sS", "--cacert", os.path.join(w, "ca.crt"), "-o", "/dev/null", "-w",
                            "%{http_code}", f"https://127.0.0.1:{port}/healthz"], capture_output=True, timeout=60)
        check(p.stdout == b"200", f"curl --cacert: {p.stdout!r} {p.stderr[-200:]!r}")
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", f"https://127.0.0.1:{port}/healthz"],
                           capture_output=True, timeout=60)
        check(p.returncode != 0, "curl without the CA does not trust the certificate")
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/healthz"],
                           capture_output=True, timeout=60)
        check(p.stdout != b"200", f"plain HTTP on the TLS port is not served ({p.stdout!r})")
    else:
        check(False, "curl is installed (scripts/install-deps.sh)")
    check(s_client(port, "tls1_3", w, False), "openssl s_client: TLS 1.3 accepted")
    check(s_client(port, "tls1_2", w, False), "openssl s_client: TLS 1.2 accepted")
    control = tls11_control(w)
    check(control, "openssl s_client speaks TLS 1.1 to openssl s_server (the control)")
    check(not s_client(port, "tls1_1", w), "openssl s_client: TLS 1.1 refused by effnetd")
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        c = context(w, min_v=v, max_v=v)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
                c.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            got = s.version()
        check(answer.startswith(b"HTTP/1.1 200") and got == v.name.replace("_", "."),
              f"Python ssl with {v.name}: {answer[:15]!r} over {got}")


def test_cert_reload(d, w, ctx, key, photo):
    """A connection kept alive across the reload (POSTs: libmicrohttpd
    keeps their connections open) goes on with certificate a."""
    port = d.port
    hdr = {"Authorization": f"Bearer {key}", "Content-Type": dm.content_type_of(photo)}
    a, b = fingerprint(cert_der(w, "a")), fingerprint(cert_der(w, "b"))
    gport = grpc_port(d) if grpc else None
    if gport:
        check(peer_cert(gport, h2_context(w)) == a, "gRPC before the reload: certificate a")
    old = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    old.request("POST", "/v1/classify", body=photo, headers=hdr)
    r = old.getresponse()
    r.read()
    sock_before = old.sock
    check(r.status == 200 and old.sock is not None and fingerprint(old.sock.getpeercert(True)) == a,
          "before the reload: certificate a, the connection kept alive")

    for ext in ("crt", "key"):
        shutil.copy(os.path.join(w, f"b.{ext}"), os.path.join(w, f"serving.{ext}.new"))
        os.rename(os.path.join(w, f"serving.{ext}.new"), os.path.join(w, f"serving.{ext}"))
    since = len(d.log_text())
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, "TLS certificate and key read again", since), "SIGHUP reads the certificate and key again")

    old.request("POST", "/v1/classify", body=photo, headers=hdr)
    r = old.getresponse()
    r.read()
    check(r.status == 200 and old.sock is not None and old.sock is sock_before and fingerprint(old.sock.getpeercert(True)) == a,
          "a connection opened before the reload goes on (same socket, certificate a)")
    old.close()
    check(peer_cert(port, ctx) == b, "a new connection gets certificate b")
    if gport:
        check(peer_cert(gport, h2_context(w)) == b, "a new gRPC connection gets certificate b")
        check(grpc_live(w, gport, grpc_creds(w), (("authorization", f"Bearer {key}"),)) is True,
              "gRPC over TLS served with certificate b")

    # A key that is not the certificate's: refused, b stays.
    shutil.copy(os.path.join(w, "a.key"), os.path.join(w, "serving.key"))
    since = len(d.log_text())
    d.proc.send_signal(signal.SIGHUP)
    check(wait_log(d, "keeping the TLS certificate in use", since), "a mismatched key is refused on reload")
    check(peer_cert(port, ctx) == b, "and certificate b still serves")
    m = metrics(port, ctx, key)
    check(m.get('effnetd_tls_cert_reloads_total{result="ok"}', 0) >= 1 and
          m.get('effnetd_tls_cert_reloads_total{result="error"}', 0) >= 1, "certificate reloads counted by result")
    check(m.get("effnetd_tls_cert_not_after_seconds", 0) > time.time(), "the certificate's expiry is a gauge")


def test_trace(d, w, ctx, key):
    port = d.port
    hdr = {"Authorization": f"Bearer {key}"}
    st, h, _ = https(port, ctx, "GET", "/v1/models", hdr | {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                                            "tracestate": "congo=t61rcWkgMzE"})
    m = TRACEPARENT_RE.match(h.get("traceparent", ""))
    check(st == 200 and m and m.group(1) == TRACE_ID and m.group(2) != PARENT_ID and m.group(3) == "01",
          f"a valid traceparent is joined: {h.get('traceparent')}")
    check(h.get("tracestate") == "congo=t61rcWkgMzE", f"its tracestate comes back: {h.get('tracestate')}")
    span = m.group(2) if m else "?"
    dm.wait_until(lambda: span in d.log_text(), 10)
    line = [x for x in d.log_text().splitlines() if span in x]
    check(line and f"trace_id={TRACE_ID}" in line[0] and f"span_id={span}" in line[0],
          f"the access log has the trace and span ids: {line[:1]}")

    seen = set()
    for bad in (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01",
                f"00-{'0' * 32}-{PARENT_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID}-{PARENT_ID}-01-x",
                f"00-{TRACE_ID}-{PARENT_ID}-1", "garbage"):
        st, h, _ = https(port, ctx, "GET", "/healthz", {"traceparent": bad})
        m = TRACEPARENT_RE.match(h.get("traceparent", ""))
        check(st == 200 and m and m.group(1) != TRACE_ID and m.group(1) != "0" * 32 and m.group(3) == "00",
              f"invalid traceparent {bad!r} starts a new trace: {h.get('traceparent')}")
        if m:
            seen.add(m.group(1))
    st, h, _ = https(port, ctx, "GET", "/healthz", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                                    "tracestate": "Congo=bad value"})
    check(st == 200 and "tracestate" not in h, f"an invalid tracestate is dropped: {h.get('tracestate')}")
    st, h, _ = https(port, ctx, "GET", "/healthz", {"traceparent": "garbage", "tracestate": "congo=t61rcWkgMzE"})
    check(st == 200 and "tracestate" not in h, f"a tracestate without a valid traceparent is dropped: "
          f"{h.get('tracestate')}")
    st, h, _ = https(port, ctx, "GET", "/healthz", {"traceparent": f"01-{TRACE_ID}-{PARENT_ID}-01-future"})
    m = TRACEPARENT_RE.match(h.get("traceparent", ""))
    check(m and m.group(1) == TRACE_ID, f"a later version with more fields is joined: {h.get('traceparent')}")
    st, h, _ = https(port, ctx, "GET", "/healthz")
    m = TRACEPARENT_RE.match(h.get("traceparent", ""))
    check(m and m.group(1) not in seen, f"no traceparent: a new trace ({h.get('traceparent')})")


def test_grpc_trace(d, w, key, photo):
    """Trace context from gRPC metadata: joined, answered in the initial
    metadata, logged; refusals carry it too."""
    port = grpc_port(d)
    pb, stub = gc.load(w, port, grpc_creds(w))
    auth = ("authorization", f"Bearer {key}")
    r, call = stub.ModelInfer.with_call(gc.infer_request(pb, MODEL, "BYTES", [photo], request_id="traced-1"),
                                        metadata=(auth, ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                                                  ("tracestate", "congo=t61rcWkgMzE")), timeout=120)
    tp = dict(call.initial_metadata()).get("traceparent", "")
    m = TRACEPARENT_RE.match(tp)
    check(r.id == "traced-1" and m and m.group(1) == TRACE_ID and m.group(2) != PARENT_ID and m.group(3) == "01",
          f"gRPC: a valid traceparent is joined, ours in the initial metadata: {tp}")
    ts = dict(call.initial_metadata()).get("tracestate")
    check(ts == "congo=t61rcWkgMzE", f"gRPC: its tracestate comes back in the initial metadata: {ts}")
    span = m.group(2) if m else "?"
    dm.wait_until(lambda: span in d.log_text(), 10)
    line = [x for x in d.log_text().splitlines() if span in x]
    check(line and "ModelInfer" in line[0] and f"trace_id={TRACE_ID}" in line[0] and f"span_id={span}" in line[0],
          f"the gRPC access line has the trace and span ids: {line[:1]}")

    _, call = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=(
        ("traceparent", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01"),), timeout=10)
    m = TRACEPARENT_RE.match(dict(call.initial_metadata()).get("traceparent", ""))
    check(m and m.group(1) not in (TRACE_ID, "0" * 32) and m.group(3) == "00",
          f"gRPC: an invalid traceparent starts a new trace: {m and m.group(0)}")
    try:
        stub.ModelInfer(gc.infer_request(pb, MODEL, "BYTES", [photo]),
                        metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("tracestate", "rojo=00f067")),
                        timeout=30)
        got = None
    except grpc.RpcError as e:
        md = dict(list(e.initial_metadata() or ()) + list(e.trailing_metadata() or ()))
        got = (e.code(), md.get("traceparent", ""), md.get("tracestate"))
    m = TRACEPARENT_RE.match(got[1]) if got else None
    check(got and got[0] == grpc.StatusCode.UNAUTHENTICATED and m and m.group(1) == TRACE_ID and
          got[2] == "rojo=00f067", f"gRPC: a refused call carries traceparent and tracestate too ({got})")


def test_mtls(effnetd, b0, w):
    d = dm.Daemon(effnetd, b0, w, "--tls-cert", os.path.join(w, "a.crt"), "--tls-key", os.path.join(w, "a.key"),
                  "--tls-client-ca", os.path.join(w, "clientca.crt"), "--admin-listen", "127.0.0.1:0",
                  "--max-batch", 1, "--body-timeout", 2, *(("--grpc-listen", "127.0.0.1:0") if grpc else ()),
                  name="mtls")
    try:
        check(outcome(d.port, context(w, "client")) == 200, "mTLS: the client CA's client is served")

        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            got = outcome(d.port, context(w, None, v, v))
            check(got != 200, f"mTLS {v.name}: no client certificate refused ({got})")
            got = outcome(d.port, context(w, "rogue", v, v))
            check(got != 200, f"mTLS {v.name}: a client certificate of another CA refused ({got})")
            got = outcome(d.port, context(w, "serveronly", v, v))
            check(got != 200, f"mTLS {v.name}: the CA's certificate for servers only (serverAuth) refused ({got})")
        m = metrics(dm.admin_port(d), context(w, "client"))
        check(m.get("effnetd_tls_client_cert_refused_total", 0) == 4,
              f"refused client certificates counted: {m.get('effnetd_tls_client_cert_refused_total')}")
        check(outcome(d.port, context(w, "client")) == 200, "mTLS: still served after the refusals")
        if grpc:
            # grpcio retries a failed connection within the call's time:
            # a refusal counts at least once.
            gport = grpc_port(d)
            got = grpc_live(w, gport, grpc_creds(w))
            check(got is not True, f"mTLS gRPC: no client certificate refused ({got})")
            got = grpc_live(w, gport, grpc_creds(w, "rogue"))
            check(got is not True, f"mTLS gRPC: a client certificate of another CA refused ({got})")
            m = metrics(dm.admin_port(d), context(w, "client"))
            certs = m.get("effnetd_tls_client_cert_refused_total", 0)
            handshakes = m.get('effnetd_grpc_refusals_total{reason="tls_handshake"}', 0)
            check(certs >= 5 and handshakes >= 2,
                  f"mTLS gRPC refusals counted: client certificates {certs}, handshakes {handshakes}")
            check(grpc_live(w, gport, grpc_creds(w, "client")) is True, "mTLS gRPC: the client CA's client is served")
            # A client that never finishes its handshake is closed after
            # the read timeout (body-timeout 2 s).
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", gport), timeout=30) as raw:
                try:
                    got = raw.recv(100)
                except OSError as e:
                    got = type(e).__name__
            waited = time.monotonic() - t0
            check(got == b"" and 1 <= waited < 20, f"a silent gRPC TLS client is closed after {waited:.1f} s ({got!r})")
    finally:
        check(d.stop() == 0, "the mTLS daemon stops cleanly")


def tls_h2(port, w):
    """A TLS connection that speaks HTTP/2 (ALPN h2, the preface and
    SETTINGS sent), which reports a cut (EOF without close_notify) as
    SSLEOFError instead of hiding it."""
    ctx = h2_context(w)
    # Debian's Python sets this by default, and so reads a cut as an end.
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + gc.frame(gc.SETTINGS, 0, 0))
    return s


def how_it_ends(s):
    """How the server ended a connection: "close_notify" when TLS's alert
    came before the end, else the exception's name."""
    try:
        while s.recv(65536):
            pass
        return "close_notify"
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__
    finally:
        s.close()


def test_grpc_tls_close(effnetd, b0, w):
    """A gRPC TLS connection the server ends on purpose (idle past
    connection-timeout, or drained by SIGTERM) ends with TLS's
    close_notify, not a cut."""
    d = dm.Daemon(effnetd, b0, w, "--tls-cert", os.path.join(w, "a.crt"), "--tls-key", os.path.join(w, "a.key"),
                  "--grpc-listen", "127.0.0.1:0", "--connection-timeout", 2, "--max-batch", 1, name="tls-close")
    try:
        port = grpc_port(d)
        s = tls_h2(port, w)
        t0 = time.monotonic()
        end = how_it_ends(s)
        check(end == "close_notify", f"an idle gRPC TLS connection is closed after {time.monotonic() - t0:.1f} s "
              f"with close_notify ({end})")
        s = tls_h2(port, w)
        s.recv(100)     # the server's SETTINGS: the connection is up
        d.proc.send_signal(signal.SIGTERM)
        end = how_it_ends(s)
        check(end == "close_notify", f"draining: a gRPC TLS connection gets GOAWAY and close_notify ({end})")
    finally:
        rc = d.stop()
        check(rc == 0, f"effnetd stops cleanly ({rc})")


def test_grpc_tls_budget(effnetd, b0, w):
    """What GnuTLS holds for a connection is charged to the memory budget
    at accept: 400 idle TLS connections against a 2 MiB budget are mostly
    refused, and the daemon's RSS grows by less than 1.5 times the budget
    (without the charge, the budget counted only nghttp2's part of each
    connection and RSS grew by twice the budget; unbounded, 400 sessions
    would take about 16 MiB)."""
    budget = 2 << 20
    asan = "asan" in os.environ.get("MESON_BUILD_ROOT", "") or bool(os.environ.get("ASAN_OPTIONS"))
    bound = budget * 1.5 * (1.5 if asan else 1.0) / (1 << 20)
    d = dm.Daemon(effnetd, b0, w, "--tls-cert", os.path.join(w, "a.crt"), "--tls-key", os.path.join(w, "a.key"),
                  "--grpc-listen", "127.0.0.1:0", "--memory-budget", budget, "--max-client-share", budget,
                  "--v2-max-body-bytes", 1 << 19, "--max-body-bytes", 1 << 19,
                  "--max-connections", 1000, "--max-batch", 1, name="tls-budget",
                  env={"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").lstrip(":")})
    socks = []
    try:
        port = grpc_port(d)
        time.sleep(1)
        rss0 = dm.status_kb(d.proc.pid, "VmRSS")
        refused = 0
        for _ in range(400):
            try:
                s = tls_h2(port, w)
                socks.append(s)
                if not s.recv(100):
                    refused += 1
            except (OSError, ssl.SSLError):
                refused += 1
        time.sleep(1)
        grown = (dm.status_kb(d.proc.pid, "VmRSS") - rss0) / 1024
        check(refused > 300 and grown < bound, f"400 idle gRPC TLS connections against a 2 MiB budget: "
              f"{400 - refused} served, {refused} refused, RSS grew {grown:.1f} MiB (< {bound:.1f})")
        for s in socks:
            s.close()
        socks = []
        charged = dm.wait_until(lambda: metrics(d.port, context(w)).get("effnetd_memory_charged_bytes") == 0, 10)
        check(bool(charged) and grpc_live(w, port, grpc_creds(w)) is True,
              "the connections' charges come back: a new one is served")
    finally:
        for s in socks:
            s.close()
        d.stop()


def main():
    effnetd, effnet = sys.argv[1], sys.argv[2]
    if not shutil.which("openssl"):
        print("SKIP: openssl is not installed (scripts/install-deps.sh)")
        sys.exit(dm.SKIP)
    photos = dm.sample_photos()
    with tempfile.TemporaryDirectory(prefix="effnetd-secure-") as w:
        b0 = os.path.join(w, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", b0], check=True, timeout=600)
        make_pki(w)
        photo = dm.read(next(iter(photos.values()))) if photos else None
        if photo is None:
            print("SKIP: no sample photo (python3-skimage or python3-matplotlib)")
            sys.exit(dm.SKIP)

        # effnet hash-key agrees with sha256, and keeps the key off the command line.
        p = subprocess.run([effnet, "hash-key"], input=b"k1-" + b"a" * 40 + b"\n", capture_output=True, timeout=30)
        check(p.returncode == 0 and p.stdout.decode().strip() == hashlib.sha256(b"k1-" + b"a" * 40).hexdigest(),
              f"effnet hash-key prints the key's sha256 ({p.stdout!r})")
        p = subprocess.run([effnet, "hash-key"], input=b"two words\n", capture_output=True, timeout=30)
        check(p.returncode != 0, "effnet hash-key refuses a key with a blank")
        keys_path = os.path.join(w, "api-keys")
        with open(keys_path, "w") as f:
            f.write(subprocess.run([effnet, "hash-key"], input=b"k1-" + b"a" * 40, capture_output=True,
                                   check=True).stdout.decode())
        for ext in ("crt", "key"):
            shutil.copy(os.path.join(w, f"a.{ext}"), os.path.join(w, f"serving.{ext}"))

        # A broken key file stops the start, naming the file.
        bad = os.path.join(w, "bad-keys")
        with open(bad, "w") as f:
            f.write("secret-in-plain-text\n")
        p = subprocess.run([effnetd, "--weights", b0, "--listen", "127.0.0.1:0", "--api-keys-file", bad],
                           capture_output=True, timeout=120)
        err = p.stderr.decode(errors="replace")
        check(p.returncode != 0 and "bad-keys" in err and "line 1" in err and "secret-in-plain-text" not in err,
              "a key file of plain keys stops the start, naming the line but not its text")

        d = dm.Daemon(effnetd, b0, w, "--tls-cert", os.path.join(w, "serving.crt"), "--tls-key",
                      os.path.join(w, "serving.key"), "--api-keys-file", keys_path, "--admin-listen", "127.0.0.1:0",
                      "--max-batch", 1, *(("--grpc-listen", "127.0.0.1:0") if grpc else ()), name="secure")
        try:
            check("listening on https://" in d.log_text(), "the log says https://")
            ctx = context(w)
            key = test_keys(d, w, ctx, keys_path, photo)
            test_tls_versions(d, w, ctx)
            if grpc:
                test_grpc_tls(d, w, ctx, key, photo)
            else:
                print(f"note: gRPC over TLS not tested, needs python3-grpcio and python3-grpc-tools ({GRPC_MISSING})")
            test_cert_reload(d, w, ctx, key, photo)
            test_trace(d, w, ctx, key)
            if grpc:
                test_grpc_trace(d, w, key, photo)
            log = d.log_text()
            check("aaaaaaaaaa" not in log and "bbbbbbbbbb" not in log, "no key reaches the log")
        finally:
            rc = d.stop()
            check(rc == 0, f"effnetd stops cleanly ({rc})")
        test_mtls(effnetd, b0, w)
        if grpc:
            test_grpc_tls_close(effnetd, b0, w)
            test_grpc_tls_budget(effnetd, b0, w)
    finish()


if __name__ == "__main__":
    main()
