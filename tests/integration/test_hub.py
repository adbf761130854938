"""effnet pull and hf:// weights against a stand-in of the Hugging Face Hub's
resolve endpoint, started here on 127.0.0.1 (HF_ENDPOINT points at it):
redirects, ETag / X-Linked-Etag / X-Repo-Commit, Range resume of an
interrupted transfer, corrupt bytes, 404, 401/403 and tokens, the cache
layout huggingface_hub reads, no request when cached, and effnet inspect /
effnetd --weights hf://... serving from the cache. And hostile hubs: one
that trickles (the download's deadline ends the pull, the start and a
reload, and bounds systemd's start timeout extensions), signed CDN
addresses in failures (never in a message), a non-LFS file that is not its
git blob, resumes answered with other bytes, links planted in a shared
cache, and an HTTPS hub (a self-signed CA made with openssl) redirecting to
plain HTTP. Loopback only.

Usage: test_hub.py EFFNETD EFFNET"""

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import ssl
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import Daemon, Notify, check, content_type_of, finish, free_port, sample_photos, read  # noqa: E402

EFFNETD, EFFNET = sys.argv[1], sys.argv[2]
REPO = "timm/tf_efficientnetv2_s.in21k_ft_in1k"
FEW = 12   # classes of the weights of acme/named (a stand-in for 21,843), named by its config.json
TOKEN = "hf_s3cret"
SECRET = "SECRETSIG0123456789"   # a CDN signature: never in a message
TRICKLE_S = 0.5                  # a byte every TRICKLE_S seconds: 2 B/s, never a stall
SLOW_S, SLOW_BODY = 1.5, b'{"a":1}'   # 0.67 B/s, but never 3 s without a byte


def few_of(hub):
    """The few-class weights: those of the repositories about class names."""
    return hub.repos["acme/named"][1]


def commit_of(name):
    return hashlib.sha1(name.encode()).hexdigest()


class Hub:
    """The resolve endpoint as the hub answers it: LFS files are a 302 to a
    content URL (here on the same server, /lfs/SHA256) with X-Linked-Etag
    (the sha256), X-Linked-Size and X-Repo-Commit; small files are 200 with
    a git-sha1 ETag. Counts every request."""

    def __init__(self, weights, few, tls=None):
        self.blob = weights
        self.sha = hashlib.sha256(weights).hexdigest()
        self.config = b'{"architecture": "tf_efficientnetv2_s"}\n'
        # Class names as timm writes them into config.json: label_names
        # (synsets for ImageNet) and label_descriptions for some of them.
        names = [f"n{9000000 + i:08d}" for i in range(FEW)]
        self.configs = {
            "acme/named": json.dumps({"architecture": "tf_efficientnetv2_b0", "num_classes": FEW,
                              "label_names": names,
                              "label_descriptions": {n: f"thing {i}, a kind" for i, n in enumerate(names) if i % 2}
                              }).encode(),
            "acme/wrong-count": json.dumps({"num_classes": FEW - 1, "label_names": names[:-1]}).encode(),
        }
        self.blobs = {self.sha: weights, hashlib.sha256(few).hexdigest(): few}
        self.requests = []          # (method, path, headers dict)
        self.cut_first = set()      # repos whose first content GET is cut mid-body
        self.lock = threading.Lock()
        # repo -> (needs token: None | 401 | 403, served bytes for its LFS file)
        self.repos = {
            REPO: (None, weights),
            "acme/resume": (None, weights),
            "acme/corrupt": (None, weights[:1000] + bytes([weights[1000] ^ 0xFF]) + weights[1001:]),
            "acme/private": (401, weights),
            "acme/gated": (403, weights),
            "acme/cache2": (None, weights),
            "acme/offline": (None, weights),
            "acme/tty": (None, weights),
            "acme/named": (None, few),
            "acme/wrong-count": (None, few),
            "acme/no-names": (None, few),
            # Hostile or broken servers, each in its own way (content()).
            "acme/trickle": (None, weights),
            "acme/slow": (None, weights),
            "acme/signed-big": (None, weights),
            "acme/signed-loop": (None, weights),
            "acme/bad-sha1": (None, weights),
            "acme/badrange": (None, weights),
            "acme/norange": (None, weights),
            "acme/garbage": (None, weights),
            "acme/symlink": (None, weights),
            "acme/tls": (None, weights),
            "acme/downgrade": (None, weights),
            "acme/downgrade-get": (None, weights),
        }
        self.trickled = {}          # repo -> bytes trickled
        self.downgrade_to = None    # the plain http:// hub a TLS one redirects to
        self.revisions = {"main": commit_of("main"), "v1": commit_of("v1")}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, head=True)

            def do_GET(self):
                hub.answer(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.requests)

    def since(self, n, config=False):
        """Requests from the n-th on; without config, not those for the
        config.json that effnet pull fetches after the weights."""
        with self.lock:
            return [r for r in self.requests[n:] if config or not r[1].endswith("/config.json")]

    def answer(self, h, head):
        with self.lock:
            self.requests.append((h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        path = h.path
        if path.startswith(("/lfs/", "/signed/")):
            return self.content(h, head, path)
        if path.startswith("/down/"):
            # TLS content that redirects to plain HTTP.
            return self.send(h, 302, {"Location": f"{self.downgrade_to}/lfs/{path[len('/down/'):]}"}, b"", head)
        parts = path.lstrip("/").split("/")
        # /ORG/NAME/resolve/REVISION/FILE...
        if len(parts) < 5 or parts[2] != "resolve":
            return self.error(h, 404, None)
        repo, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo == "timm/old_name":
            # A renamed repository: a relative redirect, followed by HEAD.
            return self.send(h, 307, {"Location": f"/{REPO}/resolve/{rev}/{file}"}, b"")
        if repo not in self.repos:
            return self.error(h, 404, "RepoNotFound")
        needs, served = self.repos[repo]
        if needs and h.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(h, needs, "GatedRepo" if needs == 403 else "RepoNotFound")
        # A branch, a tag or a commit, as the hub takes them.
        commit = self.revisions.get(rev) or (rev if rev in self.revisions.values() else None)
        if not commit:
            return self.error(h, 404, "RevisionNotFound")
        if file.endswith("model.safetensors"):
            blob = served if served is few_of(self) else self.blob
            sha = hashlib.sha256(blob).hexdigest()
            location = f"{self.url}/lfs/{sha}?repo={repo}"
            if repo.startswith("acme/signed"):
                location = f"{self.url}/signed/{sha}?repo={repo}&X-Amz-Signature={SECRET}"
            elif repo == "acme/downgrade":
                location = f"{self.downgrade_to}/lfs/{sha}?repo={repo}"
            elif repo == "acme/downgrade-get":
                location = f"{self.url}/down/{sha}?repo={repo}"
            headers = {
                "Location": location,
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(blob)),
                "ETag": '"0123456789abcdef0123456789abcdef01234567"',   # the LFS pointer's
            }
            return self.send(h, 302, headers, b"", head)
        if repo == "acme/slow" and file == "slow.json":
            # A small file sent a byte every SLOW_S seconds: slow, never a stall.
            body = SLOW_BODY
            sha1 = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
            headers = {"X-Repo-Commit": commit, "ETag": f'"{sha1}"'}
            if head:
                return self.send(h, 200, headers, body, head)
            return self.trickle(h, repo, body, headers, SLOW_S)
        if file == "config.json" and repo != "acme/no-names":
            config = self.configs.get(repo, self.config)
            sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
            if repo == "acme/bad-sha1":
                # The git blob id of other content: what arrives is not it.
                sha1 = hashlib.sha1(b"blob 5\0other").hexdigest()
            headers = {"X-Repo-Commit": commit, "ETag": f'"{sha1}"'}
            return self.send(h, 200, headers, config, head)
        return self.error(h, 404, "EntryNotFound", {"X-Repo-Commit": commit})

    def content(self, h, head, path):
        u = urllib.parse.urlsplit(path)
        sha = u.path.split("/")[-1]
        repo = urllib.parse.parse_qs(u.query).get("repo", [""])[0]
        if sha not in self.blobs or repo not in self.repos:
            return self.error(h, 404, None)
        data = self.repos[repo][1]
        if repo == "acme/signed-loop":
            # Redirects to itself, signature and all, until the client gives up.
            return self.send(h, 302, {"Location": path}, b"", head)
        if repo == "acme/trickle":
            return self.trickle(h, repo, data)
        start = 0
        rng = h.headers.get("Range")
        if rng and repo != "acme/norange":   # that one ignores Range: 200, all of it
            start = int(rng.split("=")[1].rstrip("-"))
        status = 206 if start else 200
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data) - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if start and repo == "acme/badrange":
            # 206, but the whole file: its Content-Range says it starts at 0.
            start = 0
            headers.update({"Content-Length": str(len(data)), "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
        if repo == "acme/signed-big":
            # More bytes than X-Linked-Size said.
            data = data + b"extra"
            headers["Content-Length"] = str(len(data) - start)
        with self.lock:
            cut = repo in self.cut_first
            self.cut_first.discard(repo)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if head:
            return
        body = data[start:]
        if cut:
            # The connection drops half-way: the client must resume.
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            time.sleep(0.2)   # let the first half arrive before the cut
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)

    def trickle(self, h, repo, data, headers=None, period=TRICKLE_S):
        """The whole size announced, then a byte every period seconds:
        never a stall of 10 s, and for a large file never an end."""
        h.send_response(200)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            for i in range(len(data)):
                h.wfile.write(data[i:i + 1])
                h.wfile.flush()
                with self.lock:
                    self.trickled[repo] = self.trickled.get(repo, 0) + 1
                time.sleep(period)
        except OSError:
            pass   # the client gave up

    def send(self, h, status, headers, body, head=False):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def error(self, h, status, code, extra=None):
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        body = json.dumps({"error": code or "not found"}).encode()
        self.send(h, status, headers, body, h.command == "HEAD")


def run(args, env, timeout=120):
    p = subprocess.run([EFFNET] + args, env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def storage(cache, repo):
    return os.path.join(cache, "models--" + repo.replace("/", "--"))


def try_to_load_from_cache(cache, repo, filename, revision="main"):
    """huggingface_hub's lookup (file_download.try_to_load_from_cache), by
    hand since Debian 12 does not package it: refs/REVISION -> commit ->
    snapshots/COMMIT/FILENAME, a file."""
    folder = storage(cache, repo)
    if not os.path.isdir(folder):
        return None
    ref = os.path.join(folder, "refs", revision)
    if os.path.isfile(ref):
        with open(ref) as f:
            revision = f.read()
    snapshots = os.path.join(folder, "snapshots")
    if not os.path.isdir(snapshots) or revision not in os.listdir(snapshots):
        return None
    path = os.path.join(snapshots, revision, filename)
    return path if os.path.isfile(path) else None


def labels_from_the_hub(hub, env, work):
    """Class names from the repository's config.json (timm's label_names,
    shown as their label_descriptions where there are some), fetched by
    effnet pull into the cache; else the class index, said so."""
    n0 = hub.count()
    rc, out, err = run(["pull", "acme/named"], env)
    cfg = [r for r in hub.since(n0, config=True) if r[1].endswith("/config.json")]
    snapdir = os.path.dirname(out.strip())
    check(rc == 0 and cfg and cfg[0][1] == f"/acme/named/resolve/{commit_of('main')}/config.json",
          f"pull fetches config.json at the weights' commit ({[r[1] for r in cfg]})")
    check(os.path.isfile(os.path.join(snapdir, "config.json")), "config.json is in the same snapshot")
    names = json.loads(hub.configs["acme/named"])
    expect = [names["label_descriptions"].get(n, n) for n in names["label_names"]]
    photos = sample_photos()
    image = read(next(iter(photos.values()))) if photos else None
    n0 = hub.count()
    d = Daemon(EFFNETD, "hf://acme/named", work, name="effnetd-named", env=dict(env, HF_HUB_OFFLINE="1"))
    try:
        status, _, body = d.request("GET", "/v1/models")
        m = json.loads(body)["models"][0] if status == 200 else {}
        check(m.get("labels") == {"source": "hub:config.json", "count": FEW},
              f"/v1/models: labels from the hub's config.json ({m.get('labels')})")
        w = m.get("weights", {})
        check(w.get("source") == "hub" and w.get("repo") == "acme/named" and w.get("revision") == "main"
              and w.get("commit") == commit_of("main") and w.get("file") == "model.safetensors"
              and "path" not in w and w.get("sha256") == hashlib.sha256(few_of(hub)).hexdigest(),
              f"/v1/models: the weights' repository, revision, commit, file and sha256, no local path ({w})")
        check(w.get("trained") is False and w.get("seed") == 2,
              "/v1/models: seeded weights from the hub are still said to be untrained")
        if image:
            status, _, answer = d.classify(image, content_type_of(image), query=f"?top_k={FEW}")
            preds = answer.get("predictions") or []
            check(status == 200 and len(preds) == FEW and all(p["label"] == expect[p["index"]] for p in preds),
                  f"answers carry the config's names, descriptions where given ({preds[:2]})")
        log = d.log_text()
        check("labels hub:config.json" in log and "hub acme/named revision main commit " + commit_of("main") in log,
              "the start-up log names the labels' and the weights' source")
        check(hub.count() == n0, "served from the cache: no request")
    finally:
        check(d.stop() == 0, "effnetd stops cleanly")

    for repo, why in (("acme/no-names", "no config.json"), ("acme/wrong-count", "label_names of another count")):
        rc, out, err = run(["pull", repo], env)
        check(rc == 0 and err == "", f"pull {repo}: {why} is no error ({err.strip()})")
        d = Daemon(EFFNETD, f"hf://{repo}", work, name="effnetd-" + repo.split("/")[1], env=dict(env, HF_HUB_OFFLINE="1"))
        try:
            status, _, body = d.request("GET", "/v1/models")
            m = json.loads(body)["models"][0] if status == 200 else {}
            check(m.get("labels") == {"source": "indices", "count": FEW}, f"{repo}: labels are indices ({m.get('labels')})")
            log = d.log_text()
            check("each label is the class index" in log, f"{repo}: the log says the labels are indices")
            if repo == "acme/wrong-count":
                check(f"{FEW - 1} label_names but the model has {FEW} classes" in log,
                      "the log says why the config's names were not taken")
        finally:
            check(d.stop() == 0, f"effnetd ({repo}) stops cleanly")


def trickling_hub(hub, env, work):
    """A hub that sends a byte every TRICKLE_S seconds (2 B/s: no stall, no
    end): the download's deadline ends it, with an error that names the
    deadline and its setting, and systemd's start timeout is extended no
    further than the deadline allows; a reload stuck on it ends too, so
    that the next SIGHUP is taken."""
    # HF_HUB_DOWNLOAD_TIMEOUT is seconds without a byte, as documented (and
    # as huggingface_hub's read timeout): slower than 1 B/s is not a stall.
    n0 = hub.count()
    rc, out, err = run(["pull", "acme/slow", "--file", "slow.json"], dict(env, HF_HUB_DOWNLOAD_TIMEOUT="3"))
    gets = [r for r in hub.since(n0) if r[0] == "GET"]
    check(rc == 0 and read(out.strip()) == SLOW_BODY and len(gets) == 1,
          f"HF_HUB_DOWNLOAD_TIMEOUT=3: a byte every {SLOW_S} s is slow, not stalled: one GET ({len(gets)}, "
          f"{err.strip()})")

    t0 = time.monotonic()
    rc, out, err = run(["pull", "acme/trickle", "--deadline", "4"], env, timeout=120)
    took = time.monotonic() - t0
    check(rc != 0 and "deadline of 4 s" in err and "--deadline" in err,
          f"pull of a trickling hub fails at its deadline, naming it ({err.strip()})")
    check(took < 4 + 15, f"... within the deadline and a bounded margin ({took:.1f} s for a 4 s deadline)")
    check(hub.trickled.get("acme/trickle", 0) >= 3, f"... while bytes kept coming ({hub.trickled.get('acme/trickle')})")

    # effnetd under a NOTIFY_SOCKET: the start fails at the deadline.
    notify = Notify(os.path.join(work, "notify.sock"))
    log_path = os.path.join(work, "effnetd-trickle.log")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        p = subprocess.Popen([EFFNETD, "--weights", "hf://acme/trickle", "--listen", "127.0.0.1:0",
                              "--hub-download-deadline", "4"], stdout=subprocess.DEVNULL, stderr=log,
                             env=dict(env, NOTIFY_SOCKET=notify.path, HF_HOME=os.path.join(work, "hf-trickle")))
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    t_exit = time.monotonic()
    took = t_exit - t0
    time.sleep(0.3)
    notify.close()
    with open(log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    check(rc != 0 and took < 4 + 30, f"effnetd's start on a trickling hub fails, within bounds (rc {rc}, {took:.1f} s)")
    check("gives up after 4 s (hub-download-deadline)" in log,
          "the download's start-up line names the deadline and its setting")
    check("deadline of 4 s (hub-download-deadline)" in log, f"the error names the deadline ({log.strip()[-300:]})")
    ext = [(t, int(m["EXTEND_TIMEOUT_USEC"])) for t, m in notify.messages if "EXTEND_TIMEOUT_USEC" in m]
    # While bytes trickle in, the start is extended up to the deadline and
    # a 10 s margin, never further: no extension reaches more than that past
    # the moment the deadline ended the start (2 s of slack for this
    # listener). One of 60 s per sign of progress would.
    worst = max((t + us / 1e6 - t_exit for t, us in ext), default=0)
    check(ext and worst <= 10 + 2,
          f"systemd's start timeout is extended no further than the deadline allows ({len(ext)} extensions, "
          f"the furthest reaching {worst:.1f} s past the failed start's end)")

    # A reload that downloads from it fails at the deadline; the next one is taken.
    conf = os.path.join(work, "trickle.conf")
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = hf://{REPO}\n")
    d = Daemon(EFFNETD, None, work, "--config", conf, name="effnetd-trickle-reload", env=dict(env, HF_HUB_OFFLINE=""))
    try:
        with open(conf, "w") as f:
            f.write("[model]\nweights = hf://acme/trickle\nhub-download-deadline = 3\n")
        d.proc.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        while "reload failed" not in d.log_text() and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        log = d.log_text()
        check("reload failed" in log and "deadline of 3 s (hub-download-deadline)" in log,
              f"a reload stuck on a trickling hub fails at its deadline ({time.monotonic() - t0:.1f} s)")
        with open(conf, "w") as f:
            f.write(f"[model]\nweights = hf://{REPO}\n")
        n = log.count("reloaded: now serving")
        d.proc.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        while d.log_text().count("reloaded: now serving") == n and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        log = d.log_text()
        check(log.count("reloaded: now serving") > n and "a reload is already running" not in log,
              "the next SIGHUP is taken and reloads")
        status, _, _ = d.request("GET", "/readyz")
        check(status == 200, f"still serving ({status})")
    finally:
        check(d.stop() == 0, "effnetd stops cleanly")


def leaky_hubs(hub, env, work):
    """The hub redirects to a signed URL (?X-Amz-Signature=...), which then
    fails: more bytes than announced, or redirects until the client gives
    up. The signature is in no message, of effnet or of effnetd."""
    for repo in ("acme/signed-big", "acme/signed-loop"):
        rc, out, err = run(["pull", repo], env)
        check(rc != 0 and SECRET not in err and "/signed/" in err,
              f"pull {repo}: fails, naming the address without its signature ({err.strip()})")
        d = Daemon(EFFNETD, f"hf://{repo}", work, name="effnetd-" + repo.split("/")[1], wait=False,
                   env=dict(env, HF_HOME=os.path.join(work, "hf-" + repo.split("/")[1])))
        try:
            rc = d.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            rc = None
        log = d.log_text()
        check(rc not in (0, None) and repo in log and SECRET not in log,
              f"effnetd --weights hf://{repo}: fails, its log without the signature ({log.strip()[-240:]})")
        if rc is None:
            d.stop()


def unverified_bytes(hub, env, work, cache, weights):
    """Files the hub sends are all verified: a non-LFS file against the git
    blob id its ETag names; a resumed .incomplete only where the server's
    Content-Range continues it, else from zero; a garbage prefix from an
    earlier run costs a download from zero, not the fetch; links planted in
    a shared cache are not followed."""
    rc, out, err = run(["pull", "acme/bad-sha1", "--file", "config.json"], env)
    folder = storage(cache, "acme/bad-sha1")
    snaps = os.path.join(folder, "snapshots")
    check(rc != 0 and "git blob sha1" in err and out == "",
          f"a non-LFS file whose content is not its ETag's git blob is refused ({err.strip()})")
    check(not os.path.exists(snaps) or os.listdir(snaps) == [], "... and nothing enters snapshots/")

    def plant(repo, prefix):
        blobs = os.path.join(storage(cache, repo), "blobs")
        os.makedirs(blobs, exist_ok=True)
        with open(os.path.join(blobs, hub.sha + ".incomplete"), "wb") as f:
            f.write(prefix)

    for repo, what in (("acme/badrange", "answers the Range with 206 and the whole file (Content-Range 0-)"),
                       ("acme/norange", "ignores the Range (200, all of it)")):
        plant(repo, weights[:12345])
        n0 = hub.count()
        rc, out, err = run(["pull", repo], env)
        gets = [r[2].get("range") for r in hub.since(n0) if r[0] == "GET"]
        check(rc == 0 and read(out.strip()) == weights and gets and gets[0] == "bytes=12345-",
              f"a resume from a server that {what}: the file is whole ({gets}, {err.strip()})")

    plant("acme/garbage", bytes(12345))
    n0 = hub.count()
    rc, out, err = run(["pull", "acme/garbage"], env)
    gets = [r[2].get("range") for r in hub.since(n0) if r[0] == "GET"]
    check(rc == 0 and read(out.strip()) == weights and gets == ["bytes=12345-", None],
          f"an .incomplete that is not the file's start: its sha256 fails, then one download from zero ({gets}, "
          f"{err.strip()})")

    # A shared cache: the .incomplete and the lock file are links to files
    # of someone else's.
    victim = os.path.join(work, "victim")
    with open(victim, "wb") as f:
        f.write(b"precious")
    folder = storage(cache, "acme/symlink")
    os.makedirs(os.path.join(folder, "blobs"))
    os.symlink(victim, os.path.join(folder, "blobs", hub.sha + ".incomplete"))
    locks = os.path.join(cache, ".locks", "models--acme--symlink")
    os.makedirs(locks)
    made_by_lock = os.path.join(work, "made-by-lock")
    os.symlink(made_by_lock, os.path.join(locks, hub.sha + ".lock"))
    rc, out, err = run(["pull", "acme/symlink"], env)
    check(read(victim) == b"precious", "a link planted at the .incomplete is not written through")
    check(not os.path.exists(made_by_lock), "a link planted at the lock file is not followed")
    check(rc == 0 and read(out.strip()) == weights, f"... and the download is whole ({err.strip()})")


def tls_hubs(weights, few, env, work, plain):
    """A hub on HTTPS (a self-signed CA, given as REQUESTS_CA_BUNDLE, as
    requests reads it) never redirects to plain HTTP: not the metadata
    answer's redirect, nor one of the content's."""
    cert, key = os.path.join(work, "tls.pem"), os.path.join(work, "tls.key")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        print(f"note: openssl could not make a certificate, HTTPS not tried: {p.stderr.decode()[-200:]}")
        return
    hub = Hub(weights, few, tls=(cert, key))
    hub.downgrade_to = plain.url
    e = dict(env, HF_ENDPOINT=hub.url, REQUESTS_CA_BUNDLE=cert, HF_HOME=os.path.join(work, "hf-tls"))
    rc, out, err = run(["pull", "acme/tls"], e)
    check(rc == 0 and read(out.strip()) == weights, f"a hub on HTTPS, its CA from REQUESTS_CA_BUNDLE ({err.strip()})")
    for repo in ("acme/downgrade", "acme/downgrade-get"):
        n0 = plain.count()
        rc, out, err = run(["pull", repo], e)
        check(rc != 0 and "refused" in err and "https" in err, f"{repo}: https -> http refused ({err.strip()})")
        check(plain.count() == n0, f"{repo}: no request went out in clear text ({plain.count() - n0})")
    hub.server.shutdown()


def main():
    work = tempfile.mkdtemp(prefix="effnet-hub-")
    weights_file = os.path.join(work, "b0.safetensors")
    subprocess.run([EFFNET, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights_file], check=True,
                   timeout=600)
    weights = read(weights_file)
    few_file = os.path.join(work, "b0-few.safetensors")
    subprocess.run([EFFNET, "init-weights", "--variant", "b0", "--classes", str(FEW), "--seed", "2", "-o", few_file],
                   check=True, timeout=600)
    few = read(few_file)
    hub = Hub(weights, few)
    home = os.path.join(work, "hf")
    cache = os.path.join(home, "hub")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=home)

    # ---- first pull: 302 to the content, cut mid-body, resumed with Range.
    hub.cut_first.add(REPO)
    n0 = hub.count()
    rc, out, err = run(["pull", REPO], env)
    reqs = hub.since(n0)
    check(rc == 0, f"pull {REPO} succeeds (rc {rc}: {err.strip()})")
    snap = os.path.join(storage(cache, REPO), "snapshots", commit_of("main"), "model.safetensors")
    check(out == snap + "\n", f"stdout is the snapshot path ({out.strip()!r})")
    check(err == "", f"nothing on stderr when it is not a terminal ({err!r})")
    check(reqs and reqs[0][0] == "HEAD" and reqs[0][1] == f"/{REPO}/resolve/main/model.safetensors",
          "first a HEAD on {endpoint}/{repo}/resolve/{revision}/{file}")
    gets = [r for r in reqs if r[0] == "GET"]
    check(len(gets) == 2 and all(g[1].startswith("/lfs/") for g in gets),
          f"content fetched at the redirect ({len(gets)} GETs)")
    check(len(gets) == 2 and "range" not in gets[0][2] and gets[1][2].get("range", "").startswith("bytes="),
          f"the interrupted transfer is resumed with Range ({gets[1][2].get('range') if len(gets) > 1 else None})")
    if len(gets) == 2:
        start = int(gets[1][2]["range"].split("=")[1].rstrip("-"))
        check(0 < start < len(weights), f"resumed at byte {start} of {len(weights)}")
    check(os.path.isfile(snap) and read(snap) == weights, "the cached file is the hub's, byte for byte")

    # ---- the layout huggingface_hub reads.
    folder = storage(cache, REPO)
    link = os.readlink(snap) if os.path.islink(snap) else None
    check(link == f"../../blobs/{hub.sha}", f"snapshot is a relative symlink to ../../blobs/SHA256 ({link})")
    with open(os.path.join(folder, "refs", "main")) as f:
        check(f.read() == commit_of("main"), "refs/main holds the commit (X-Repo-Commit), no newline")
    config_sha1 = hashlib.sha1(b"blob %d\0" % len(hub.config) + hub.config).hexdigest()
    check(sorted(os.listdir(os.path.join(folder, "blobs"))) == sorted([hub.sha, config_sha1]),
          "blobs/ holds the blob named by X-Linked-Etag (and config.json's), no .incomplete "
          f"({os.listdir(os.path.join(folder, 'blobs'))})")
    check(try_to_load_from_cache(cache, REPO, "model.safetensors") == snap,
          "huggingface_hub's try_to_load_from_cache finds our download")
    check(os.path.isfile(os.path.join(cache, ".locks", "models--" + REPO.replace("/", "--"), hub.sha + ".lock")),
          "the download took huggingface_hub's lock file")

    # ---- cached: no request at all, for pull, hf:// inspect, and the same path.
    n0 = hub.count()
    rc, out2, err = run(["pull", REPO], env)
    check(rc == 0 and out2 == out, "a second pull prints the same path")
    rc, out3, err = run(["inspect", f"hf://{REPO}"], env)
    check(rc == 0 and "variant:       efficientnetv2-b0" in out3 and f"file:          {snap}" in out3,
          f"effnet inspect hf://{REPO} reads the cached file ({err.strip()})")
    check(hub.count() == n0, f"no request when the file is cached ({hub.count() - n0} made)")

    # ---- --refresh asks again (HEAD only: the blob is there).
    n0 = hub.count()
    rc, out4, err = run(["pull", "--refresh", REPO], env)
    methods = [r[0] for r in hub.since(n0)]
    check(rc == 0 and out4 == out and methods == ["HEAD"], f"pull --refresh: one HEAD, no download ({methods})")

    # ---- a file in a folder: one more "../"; the blob is there, only linked.
    n0 = hub.count()
    rc, out9, err = run(["pull", REPO, "--file", "sub/dir/model.safetensors"], env)
    nested = os.path.join(folder, "snapshots", commit_of("main"), "sub", "dir", "model.safetensors")
    check(rc == 0 and out9.strip() == nested and os.readlink(nested) == f"../../../../blobs/{hub.sha}",
          f"a nested file links to ../../../../blobs/SHA256 ({err.strip()})")
    check([r[0] for r in hub.since(n0)] == ["HEAD"], "a blob already in the cache is linked, not downloaded")

    # ---- on a terminal: a progress bar on stderr.
    if shutil.which("script"):
        cmd = f"{EFFNET} pull acme/tty 2>&1"
        p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, capture_output=True, timeout=120)
        text = p.stdout.decode(errors="replace")
        check(p.returncode == 0 and "100%" in text and "MB" in text and "[###" in text,
              f"a progress bar on a terminal ({text[-200:]!r})")
    else:
        print("note: no script(1) (bsdutils): the progress bar on a terminal is not tried")

    # ---- a renamed repository: relative redirect followed by the HEAD.
    rc, out5, err = run(["pull", "timm/old_name"], env)
    check(rc == 0 and out5.strip().endswith("models--timm--old_name/snapshots/" + commit_of("main") +
                                            "/model.safetensors"), f"relative redirect followed ({err.strip()})")

    # ---- another revision and a small (non-LFS) file: ETag fallback, refs/v1.
    rc, out6, err = run(["pull", REPO, "--revision", "v1", "--file", "config.json"], env)
    sha1 = hashlib.sha1(b"blob %d\0" % len(hub.config) + hub.config).hexdigest()
    check(rc == 0 and out6.strip() == os.path.join(folder, "snapshots", commit_of("v1"), "config.json"),
          f"--revision v1 --file config.json ({err.strip()})")
    check(os.path.isfile(os.path.join(folder, "blobs", sha1)), "a small file's blob is named by its ETag")
    with open(os.path.join(folder, "refs", "v1")) as f:
        check(f.read() == commit_of("v1"), "refs/v1 holds its commit")
    rc, out7, err = run(["pull", f"hf://{REPO}@{commit_of('v1')}/config.json"], env)
    check(rc == 0 and out7 == out6, "hf://ORG/NAME@COMMIT/FILE finds the same file")

    # ---- an .incomplete left by an earlier run is resumed with Range.
    rfolder = storage(cache, "acme/resume")
    os.makedirs(os.path.join(rfolder, "blobs"))
    with open(os.path.join(rfolder, "blobs", hub.sha + ".incomplete"), "wb") as f:
        f.write(weights[:12345])
    n0 = hub.count()
    rc, out8, err = run(["pull", "acme/resume"], env)
    gets = [r for r in hub.since(n0) if r[0] == "GET"]
    check(rc == 0 and len(gets) == 1 and gets[0][2].get("range") == "bytes=12345-",
          f"an earlier .incomplete is resumed at its size ({[g[2].get('range') for g in gets]})")
    check(rc == 0 and read(out8.strip()) == weights, "the resumed file is whole")

    # ---- corrupt bytes: sha256 mismatch, nothing enters the cache.
    rc, out, err = run(["pull", "acme/corrupt"], env)
    cfolder = storage(cache, "acme/corrupt")
    snaps = os.path.join(cfolder, "snapshots")
    check(rc != 0 and "sha256" in err and out == "", f"corrupt bytes: error ({err.strip()})")
    check(not os.path.exists(snaps) or os.listdir(snaps) == [], "corrupt bytes: nothing in snapshots/")
    blobs = os.path.join(cfolder, "blobs")
    check(not os.path.exists(blobs) or os.listdir(blobs) == [], "corrupt bytes: no blob, no .incomplete")

    # ---- 404s.
    rc, out, err = run(["pull", "acme/nope"], env)
    check(rc != 0 and "not found" in err and "404" in err, f"unknown repository: 404 error ({err.strip()})")
    rc, out, err = run(["pull", REPO, "--file", "nope.bin"], env)
    check(rc != 0 and "nope.bin" in err and "not found" in err, f"unknown file: 404 error ({err.strip()})")
    rc, out, err = run(["pull", REPO, "--revision", "nope"], env)
    check(rc != 0 and "revision" in err and "not found" in err, f"unknown revision: 404 error ({err.strip()})")

    # ---- tokens: 401/403 without, 200 with HF_TOKEN or the token file.
    rc, out, err = run(["pull", "acme/private"], env)
    check(rc != 0 and "token" in err and "HF_TOKEN" in err and "401" in err, f"private without a token ({err.strip()})")
    rc, out, err = run(["pull", "acme/gated"], env)
    check(rc != 0 and "gated" in err and "HF_TOKEN" in err, f"gated without a token ({err.strip()})")
    n0 = hub.count()
    rc, out, err = run(["pull", "acme/private"], dict(env, HF_TOKEN=TOKEN))
    heads = [r for r in hub.since(n0) if r[0] == "HEAD"]
    check(rc == 0 and heads and heads[0][2].get("authorization") == f"Bearer {TOKEN}",
          f"HF_TOKEN is sent as Authorization: Bearer ({err.strip()})")
    with open(os.path.join(home, "token"), "w") as f:
        f.write(TOKEN + "\n")
    rc, out, err = run(["pull", "acme/gated"], env)
    check(rc == 0, f"the token file $HF_HOME/token is used ({err.strip()})")
    os.unlink(os.path.join(home, "token"))

    # ---- HF_HUB_CACHE wins over HF_HOME.
    cache2 = os.path.join(work, "cache2")
    rc, out, err = run(["pull", "acme/cache2"], dict(env, HF_HUB_CACHE=cache2))
    check(rc == 0 and out.startswith(cache2 + "/models--acme--cache2/snapshots/"), f"HF_HUB_CACHE ({out.strip()})")

    # ---- no network: a closed port, and HF_HUB_OFFLINE.
    rc, out, err = run(["pull", "acme/offline"], dict(env, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    check(rc != 0 and "cannot reach" in err, f"no network: error ({err.strip()})")
    n0 = hub.count()
    rc, out, err = run(["pull", "acme/offline"], dict(env, HF_HUB_OFFLINE="1"))
    check(rc != 0 and "HF_HUB_OFFLINE" in err and hub.count() == n0, f"HF_HUB_OFFLINE: no request ({err.strip()})")
    rc, out, err = run(["pull", REPO], dict(env, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"))
    check(rc == 0 and out.strip() == snap, "offline, a cached file is still found")

    # ---- bad names.
    for bad in ["hf://timm", "hf://a--b/c", "hf://timm/x@/f", "hf://timm/x/../../etc/passwd"]:
        rc, out, err = run(["inspect", bad], env)
        check(rc != 0 and out == "", f"{bad} is refused ({err.strip()})")

    # ---- effnetd --weights hf://...: downloads (saying so), then serves.
    home3 = os.path.join(work, "hf3")
    env3 = dict(env, HF_HOME=home3)
    n0 = hub.count()
    d = Daemon(EFFNETD, f"hf://{REPO}", work, name="effnetd-hub", env=env3)
    try:
        log = d.log_text()
        check("downloading" in log and hub.url in log, "effnetd logs the download with where it comes from")
        check(commit_of("main") in log, "effnetd logs the commit it serves")
        lines = [line for line in log.splitlines() if "downloading" in line]
        check(lines and "repo=" not in lines[0] and "?[redacted]" in lines[0],
              f"the logged download URL has its query redacted (a CDN's signature) ({lines[:1]})")
        check(any(r[0] == "GET" for r in hub.since(n0)), "effnetd downloaded the weights")
        status, _, body = d.request("GET", "/v1/models")
        check(status == 200 and b"b0" in body, f"/v1/models answers ({status})")
        photos = sample_photos()
        if photos:
            image = read(next(iter(photos.values())))
            status, _, answer = d.classify(image, content_type_of(image))
            check(status == 200 and answer.get("predictions"), f"classify answers from the hub file ({status})")
        else:
            print("note: no sample photo installed (python3-matplotlib, python3-skimage): classify not tried")
    finally:
        check(d.stop() == 0, "effnetd stops cleanly")
    check(try_to_load_from_cache(os.path.join(home3, "hub"), REPO, "model.safetensors") is not None,
          "effnetd's download is in the shared cache layout")
    n0 = hub.count()
    d = Daemon(EFFNETD, f"hf://{REPO}", work, name="effnetd-hub2", env=env3)
    try:
        check(hub.count() == n0, "a second start uses the cache: no request")
        # SIGHUP resolves the name again, on the reload thread, from the cache.
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while "reloaded" not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        check("reloaded" in d.log_text() and hub.count() == n0,
              "SIGHUP reloads hf:// weights from the cache, no request")
    finally:
        d.stop()
    rc = subprocess.run([EFFNETD, "--check-config", "--weights", "hf://acme/missing"], env=env3,
                        capture_output=True, timeout=60)
    check(rc.returncode == 0 and b"not in the hub cache yet" in rc.stderr,
          f"--check-config names hf:// weights not cached yet, without a request ({rc.stderr.decode().strip()})")

    labels_from_the_hub(hub, env, work)
    unverified_bytes(hub, env, work, cache, weights)
    leaky_hubs(hub, env, work)
    tls_hubs(weights, few, env, work, hub)
    trickling_hub(hub, env, work)

    hub.server.shutdown()
    if not __import__("daemon").failures:
        shutil.rmtree(work, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
