#!/usr/bin/env python3
"""Integration test of a model repository: effnetd serving two variants
(B0 in two versions, S at a small input size) and a broken model from one
folder, against single-model daemons of the same files.

- every route (/v1 by model and version, /v2 metadata, ready, config and
  infer with and without /versions/{v}) answers what a single-model daemon
  answers for the same file; a version's answer is its own;
- Triton's repository extension with the wire calls of tritonclient.http
  (v2client.py): index, load (with and without a config override, a bad
  one refused) and unload, refused outside explicit mode;
- a version added, a SIGHUP rescan with nothing changed, and a version
  removed, all under a steady load of requests: no request lost;
- per-model metrics labels, the access log naming model and version;
- a broken model reported with its reason while the others serve;
- one CPU budget for every model: even shares, a threads setting that
  would exceed the CPUs refused with the reason.
- a model in int8 with the calibration beside its weights and its
  self-check in /v1/models, and one whose calibration was made for other
  weights failing with that reason while the others serve.

    test_repository.py EFFNETD EFFNET
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402
from v2client import Output, RepositoryError, Tensor, V2Client  # noqa: E402

TOP_K = 5
# A small JPEG: a request refused at its headers is answered before a large
# body is sent.
TINY = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "jpeg",
                         "baseline_420_16x16.jpg"), "rb").read()


def init_weights(effnet, variant, seed, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([effnet, "init-weights", "--variant", variant, "--seed", str(seed), "-o", path], check=True,
                   timeout=1200, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_repository(effnet, workdir):
    """repo/b0/{1,2}, repo/s/1 (input 64, max batch 2, its own labels),
    repo/broken/1; and a third B0 version kept aside."""
    repo = os.path.join(workdir, "repo")
    init_weights(effnet, "b0", 1, f"{repo}/b0/1/model.safetensors")
    init_weights(effnet, "b0", 2, f"{repo}/b0/2/model.safetensors")
    init_weights(effnet, "b0", 3, f"{workdir}/spare/b0-3.safetensors")
    init_weights(effnet, "s", 4, f"{repo}/s/1/model.safetensors")
    with open(f"{repo}/b0/config.conf", "w") as f:
        f.write("# every version the folder has\nversion-policy = all\n")
    with open(f"{repo}/s/config.conf", "w") as f:
        f.write("[model]\ninput-size = 64\nmax-batch = 2\nlabels = names.txt\n")
    with open(f"{repo}/s/names.txt", "w") as f:
        f.write("".join(f"thing-{i}\n" for i in range(1000)))
    os.makedirs(f"{repo}/broken/1")
    with open(f"{repo}/broken/1/model.safetensors", "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return repo


def images():
    photos = dm.sample_photos()
    names = sorted(photos)[:3]
    if names:
        return [(n, dm.read(photos[n])) for n in names]
    corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "jpeg")
    return [(n, dm.read(os.path.join(corpus, n))) for n in ("baseline_420_64x48.jpg", "progressive_16x16.jpg")]


def classify(d, path, image):
    s, _, b = d.request("POST", path + f"?top_k={TOP_K}", image, {"Content-Type": dm.content_type_of(image)})
    return s, dm.parse_json(b)


def same_predictions(a, b):
    pa, pb = a["predictions"], b["predictions"]
    return ([p["index"] for p in pa] == [p["index"] for p in pb] and
            all(abs(x["score"] - y["score"]) <= 1e-5 + 1e-4 * abs(y["score"]) for x, y in zip(pa, pb)))


def v2_probs(client, model, image, version=None):
    res = client.infer(model, [Tensor("input", "BYTES", [image])], outputs=[Output("probabilities", binary=True)],
                       version=version)
    return res.status, (res.output("probabilities") if res.status == 200 else res.body)


def index_of(client):
    return {(e["name"], e.get("version")): e for e in client.get_model_repository_index()}


def test_routes(r, a, b, repo_client):
    """Every route against the single-model daemons of b0/2 (a) and b0/1 (b)."""
    ca, cb = V2Client(a.port), V2Client(b.port)
    for name, image in images():
        s1, j1 = classify(r, "/v1/models/b0/classify", image)
        sa, ja = classify(a, "/v1/classify", image)
        check(s1 == 200 and sa == 200 and same_predictions(j1, ja),
              f"{name}: /v1/models/b0/classify answers as a daemon of b0/2 ({s1} {j1.get('predictions', j1)[:2]})")
        check(j1.get("model") == "b0", f"{name}: the answer names the model ({j1.get('model')})")
        s2, j2 = classify(r, "/v1/models/b0/versions/2/classify", image)
        check(s2 == 200 and same_predictions(j2, ja), f"{name}: /versions/2/classify too")
        s3, j3 = classify(r, "/v1/models/b0/versions/1/classify", image)
        sb, jb = classify(b, "/v1/classify", image)
        check(s3 == 200 and same_predictions(j3, jb), f"{name}: /versions/1/classify answers as a daemon of b0/1")
        check(not same_predictions(j3, j1), f"{name}: version 1's answer is its own, not version 2's")
        st, pr = v2_probs(repo_client, "b0", image)
        st_a, pa = v2_probs(ca, "efficientnetv2-b0", image)
        check(st == 200 and st_a == 200 and np.allclose(pr, pa, rtol=1e-4, atol=1e-7),
              f"{name}: /v2/models/b0/infer (BYTES) answers as the daemon of b0/2")
        st, pr1 = v2_probs(repo_client, "b0", image, version="1")
        st_b, pb = v2_probs(cb, "efficientnetv2-b0", image)
        check(st == 200 and st_b == 200 and np.allclose(pr1, pb, rtol=1e-4, atol=1e-7),
              f"{name}: /v2/models/b0/versions/1/infer answers as the daemon of b0/1")
        s, j = classify(r, "/v1/models/s/classify", image)
        check(s == 200 and all(p["label"].startswith("thing-") for p in j["predictions"]),
              f"{name}: s answers with its own labels file ({s})")
    ca.close()
    cb.close()
    s, j = classify(r, "/v1/classify", TINY)
    check(s == 404 and "default-model" in j["error"]["message"],
          f"/v1/classify with several models and no default-model: 404 naming it ({s})")
    for path, want in (("/v2/models/b0", 200), ("/v2/models/b0/versions/1", 200), ("/v2/models/b0/versions/1/ready", 200),
                       ("/v2/models/b0/versions/3/ready", 404), ("/v2/models/b0/versions/01", 404),
                       ("/v2/models/s/config", 200), ("/v2/models/s/ready", 200), ("/v2/models/broken/ready", 404),
                       ("/v2/models/nope", 404)):
        s, _, j = repo_client.get(path)
        check(s == want, f"GET {path}: {want} ({s} {str(j)[:120]})")
    s, _, j = repo_client.get("/v2/models/b0")
    check(j["name"] == "b0" and j["versions"] == ["2", "1"],
          f"/v2/models/b0 lists every version serving, highest first ({j})")
    s, _, j = repo_client.get("/v2/models/b0/versions/1")
    check(j["versions"] == ["2", "1"], f"/v2/models/b0/versions/1 lists them too ({j.get('versions')})")
    s, _, j = repo_client.get("/v2/models/s")
    check(j["versions"] == ["1"], f"/v2/models/s: its one version ({j.get('versions')})")
    s, _, j = repo_client.get("/v2/models/s")
    check(j["inputs"][0]["shape"] == [-1, 3, 64, 64], f"s takes its input-size, 64 ({j['inputs'][0]['shape']})")
    s, _, j = repo_client.get("/v2/models/s/config")
    check(j.get("max_batch_size") == 2, f"s takes its max-batch, 2 ({j.get('max_batch_size')})")


def test_grpc_metadata(r, workdir):
    """gRPC ModelMetadata lists the versions as GET /v2/models/{m} does."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        print("gRPC ModelMetadata: skipped (python3-grpcio, python3-grpc-tools)")
        return
    import re
    import grpcclient
    port = int(re.search(r"gRPC \(KServe v2 GRPCInferenceService\) listening on http://127\.0\.0\.1:(\d+)",
                         r.log_text()).group(1))
    pb, stub = grpcclient.load(workdir, port)
    for model, want in (("b0", ["2", "1"]), ("s", ["1"])):
        got = list(stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=30).versions)
        check(got == want, f"gRPC ModelMetadata of {model}: versions {got}")
    got = list(stub.ModelMetadata(pb.ModelMetadataRequest(name="b0", version="1"), timeout=30).versions)
    check(got == ["2", "1"], f"gRPC ModelMetadata of b0 version 1: versions {got}")


def test_listing(r, client):
    idx = index_of(client)
    for key in (("b0", "2"), ("b0", "1"), ("s", "1")):
        check(idx.get(key, {}).get("state") == "READY", f"repository index: {key} READY ({idx.get(key)})")
    broken = idx.get(("broken", None), {})
    check(broken.get("state") == "UNAVAILABLE" and "model.safetensors" in broken.get("reason", ""),
          f"repository index: broken UNAVAILABLE with its reason ({broken})")
    s, _, body = r.request("GET", "/v1/models")
    models = dm.parse_json(body)["models"]
    got = {(m["name"], m.get("version")): m for m in models}
    check(s == 200 and got.get(("b0", 2), {}).get("state") == "READY" and got.get(("s", 1), {}).get("input_size") == 64,
          f"/v1/models lists every model and version with its state ({sorted(got)})")
    check(all(m.get("batching", {}).get("executor_bytes", 0) > 0 for m in models if m["state"] == "READY"),
          "/v1/models: executor memory per model version")
    check("reason" in got.get(("broken", None), {}), "/v1/models: the broken model and why")


def test_refused_control(client):
    try:
        client.load_model("b0")
        check(False, "load_model with model-control-mode none is refused")
    except RepositoryError as e:
        check(e.status == 400 and "none" in e.message, f"load_model with model-control-mode none: 400 ({e})")


def test_metrics_and_log(r):
    text = r.request("GET", "/metrics")[2].decode()
    m = r.metrics()
    for model, version in (("b0", 2), ("b0", 1), ("s", 1)):
        key = f'effnetd_model_images_total{{model="{model}",version="{version}"}}'
        check(m.get(key, 0) > 0, f"{key} counts its images ({m.get(key)})")
        key = f'effnetd_model_executor_bytes{{model="{model}",version="{version}"}}'
        check(m.get(key, 0) > 0, f"{key} > 0")
    check('effnetd_model_info{model="s",version="1",variant="efficientnetv2-s"' in text,
          "effnetd_model_info names model and version")
    log = r.log_text()
    check(" model=b0 version=1" in log and " model=s version=1" in log,
          "the access log names the model and version of each classify")


class Load:
    """Requests to b0 (/v1 and /v2, no version named) and s in a loop until
    stopped: every status kept."""

    def __init__(self, d, image):
        self.d, self.image, self.stop_flag, self.statuses = d, image, False, []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        client = V2Client(self.d.port)
        i = 0
        while not self.stop_flag:
            try:
                if i % 3 == 0:
                    s, _ = classify(self.d, "/v1/models/b0/classify", self.image)
                elif i % 3 == 1:
                    s, _ = v2_probs(client, "b0", self.image)
                else:
                    s, _ = classify(self.d, "/v1/models/s/classify", self.image)
            except Exception as e:  # a lost connection is a lost request
                s = repr(e)
            self.statuses.append(s)
            i += 1
        client.close()

    def stop(self):
        self.stop_flag = True
        self.thread.join()
        return self.statuses


def wait_index(client, cond, timeout=600):
    return dm.wait_until(lambda: cond(index_of(client)), timeout, step=0.2)


def test_versions_under_load(r, client, repo, workdir):
    image = images()[0][1]
    load = Load(r, image)
    time.sleep(1)
    # A new version appears whole (renamed in), then SIGHUP rescans.
    os.makedirs(f"{workdir}/staging/3")
    shutil.copy(f"{workdir}/spare/b0-3.safetensors", f"{workdir}/staging/3/model.safetensors")
    os.rename(f"{workdir}/staging/3", f"{repo}/b0/3")
    r.proc.send_signal(signal.SIGHUP)
    ok = wait_index(client, lambda i: i.get(("b0", "3"), {}).get("state") == "READY")
    check(ok, "a version added and SIGHUP: b0 version 3 loads beside 2 and 1")
    before = len(load.statuses)
    r.proc.send_signal(signal.SIGHUP)   # nothing changed: nothing reloads
    time.sleep(2)
    shutil.rmtree(f"{repo}/b0/1")
    r.proc.send_signal(signal.SIGHUP)
    ok = wait_index(client, lambda i: ("b0", "1") not in i)
    check(ok, "version 1 removed and SIGHUP: retired")
    time.sleep(1)
    statuses = load.stop()
    bad = [s for s in statuses if s != 200]
    check(len(statuses) > before > 0 and not bad,
          f"{len(statuses)} requests across a version added, a rescan and a version removed: none lost ({bad[:5]})")
    s, _, j = client.get("/v2/models/b0")
    check(j.get("versions") == ["3", "2"], f"b0 now serves versions 3 and 2 ({j.get('versions')})")
    res = client.infer("b0", [Tensor("input", "BYTES", [image])], outputs=[Output("probabilities", binary=True)])
    check(res.status == 200 and res.json.get("model_version") == "3",
          f"b0 serves version 3 by default ({res.status} {res.json.get('model_version')})")
    s, _, _ = client.get("/v2/models/b0/versions/1/ready")
    check(s == 404, f"the removed version answers 404 ({s})")
    check("loading 1 model version" in r.log_text() and r.log_text().count("model b0 version 2: loading") == 1,
          "the rescans loaded only what changed")


def test_explicit(effnetd, repo, workdir):
    e = dm.Daemon(effnetd, None, workdir, "--model-repository", repo, "--model-control-mode", "explicit",
                  "--load-model", "s", name="explicit")
    c = V2Client(e.port)
    try:
        idx = index_of(c)
        check(idx.get(("s", "1"), {}).get("state") == "READY" and idx.get(("b0", None), {}).get("state") ==
              "UNAVAILABLE", f"explicit: s loaded, b0 listed but not loaded ({sorted(idx)})")
        image = images()[0][1]
        s, j = classify(e, "/v1/classify", image)
        check(s == 200 and j.get("model") == "s", f"explicit: /v1/classify serves the only model loaded ({s})")
        s, _ = classify(e, "/v1/models/b0/classify", TINY)
        check(s == 404, f"explicit: b0 not loaded: 404 ({s})")
        c.load_model("b0")
        idx = index_of(c)
        check(idx.get(("b0", "3"), {}).get("state") == "READY", f"load_model('b0'): loaded ({sorted(idx)})")
        s, _ = classify(e, "/v1/models/b0/classify", image)
        check(s == 200, f"explicit: b0 serves once loaded ({s})")
        test_load_config(e, c, image)
        c.unload_model("b0")
        s, _ = classify(e, "/v1/models/b0/classify", TINY)
        check(s == 404, f"unload_model('b0'): 404 afterwards ({s})")
        s, _ = classify(e, "/v1/models/s/classify", image)
        check(s == 200, f"s still serves ({s})")
        idx = index_of(c)
        check(idx.get(("b0", None), {}).get("state") == "UNAVAILABLE", f"index: b0 UNAVAILABLE ({idx.get(('b0', None))})")
        for name, want in (("broken", "model.safetensors"), ("nope", "no such model")):
            try:
                c.load_model(name)
                check(False, f"load_model('{name}') fails")
            except RepositoryError as err:
                check(err.status == 400 and want in err.message, f"load_model('{name}'): 400 ({err})")
        try:
            c.unload_model("nope")
            check(False, "unload_model('nope') fails")
        except RepositoryError as err:
            check(err.status == 400, f"unload_model('nope'): 400 ({err})")
    finally:
        c.close()
        check(e.stop() == 0, "the explicit-mode daemon stops cleanly")


def max_batch_of(client, model):
    return client.get(f"/v2/models/{model}/config")[2].get("max_batch_size")


def test_load_config(e, c, image):
    """Triton's load with {"parameters": {"config": "<JSON>"}}: config.conf's
    keys for that load, checked as config.conf's lines; a bad one is
    refused (400) with nothing loaded."""
    c.load_model("b0", config='{"max-batch": 3, "workers": 1}')
    check(max_batch_of(c, "b0") == 3, f"load with config max-batch 3: serves with it ({max_batch_of(c, 'b0')})")
    loads = e.log_text().count("model b0 version 3: loading")
    for config, want in (('{"colour": "blue"}', "unknown key 'colour'"), ('{"max-batch": 0}', "max-batch"),
                         ('{"precision": "fp64"}', "precision"), ('{"max-batch": null}', "max-batch"),
                         ("not json", "JSON"), ('["max-batch", 2]', "JSON object")):
        try:
            c.load_model("b0", config=config)
            check(False, f"load with config {config} is refused")
        except RepositoryError as err:
            check(err.status == 400 and want in err.message, f"load with config {config}: 400 ({err})")
    s, _ = classify(e, "/v1/models/b0/classify", image)
    check(s == 200 and max_batch_of(c, "b0") == 3 and e.log_text().count("model b0 version 3: loading") == loads,
          f"the refused loads loaded nothing; b0 serves on as it was ({s})")
    c.load_model("b0")
    check(max_batch_of(c, "b0") == 8, f"a load without config: config.conf's settings again ({max_batch_of(c, 'b0')})")


def test_poll(effnetd, repo, workdir):
    """poll: a version added is found by the scan alone, no signal."""
    p = dm.Daemon(effnetd, None, workdir, "--model-repository", repo, "--model-control-mode", "poll",
                  "--repository-poll-secs", "1", name="poll")
    c = V2Client(p.port)
    try:
        check(index_of(c).get(("b0", "3"), {}).get("state") == "READY", "poll: b0 version 3 serves at start")
        os.makedirs(f"{workdir}/staging/4")
        shutil.copy(f"{workdir}/spare/b0-3.safetensors", f"{workdir}/staging/4/model.safetensors")
        os.rename(f"{workdir}/staging/4", f"{repo}/b0/4")
        ok = wait_index(c, lambda i: i.get(("b0", "4"), {}).get("state") == "READY", timeout=300)
        check(ok, "poll: a version added is loaded by the next scan, without SIGHUP")
        try:
            c.unload_model("b0")
            check(False, "poll: unload_model is refused")
        except RepositoryError as err:
            check(err.status == 400 and "poll" in err.message, f"poll: unload_model refused ({err})")
    finally:
        c.close()
        check(p.stop() == 0, "the poll-mode daemon stops cleanly")


def models_threads(d):
    """{name: (workers, threads per worker)} of the versions /v1/models lists as serving."""
    models = dm.parse_json(d.request("GET", "/v1/models")[2])["models"]
    return {m["name"]: (m["batching"]["workers"], m["batching"]["threads_per_worker"])
            for m in models if m.get("state") == "READY"}


def test_cpu_budget(effnetd, workdir):
    """One CPU budget for every model, on 2 CPUs (the daemon's affinity):
    two models that name no threads get one CPU each; one whose config.conf
    asks for 2 threads would push the sum over and is refused with the
    reason; asking for 1 once a model is gone fits."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        print("skip: the CPU budget case needs 2 CPUs")
        return
    repo = os.path.join(workdir, "cpu-repo")
    for name in ("a", "b", "c"):
        os.makedirs(f"{repo}/{name}/1")
        shutil.copy(f"{workdir}/spare/b0-3.safetensors", f"{repo}/{name}/1/model.safetensors")
    with open(f"{repo}/c/config.conf", "w") as f:
        f.write("threads = 2\n")
    d = dm.Daemon(effnetd, None, workdir, "--model-repository", repo, "--max-batch", "1", name="cpu-budget",
                  cpus=set(mine[:2]))
    c = V2Client(d.port)
    try:
        if "share the 2 usable CPUs" not in d.log_text():
            print("skip: the daemon does not see 2 usable CPUs (a cgroup quota?)")
            return
        idx = index_of(c)
        got = models_threads(d)
        check(got.get("a") == (1, 1) and got.get("b") == (1, 1),
              f"two models without a threads setting on 2 CPUs: 1 worker x 1 thread each ({got})")
        refused = idx.get(("c", None), {})
        check(refused.get("state") == "UNAVAILABLE" and "need 2 CPUs" in refused.get("reason", "") and
              "0 of the 2 usable CPUs" in refused.get("reason", ""),
              f"threads = 2 beside them would exceed the 2 CPUs: refused with the reason ({refused})")
        check(sum(w * t for w, t in got.values()) <= 2, f"workers x threads over the models fit 2 CPUs ({got})")
        m = d.metrics()
        check(m.get('effnetd_model_threads{model="a",version="1"}') == 1, "effnetd_model_threads of a: 1")
        shutil.rmtree(f"{repo}/b")
        with open(f"{repo}/c/config.conf", "w") as f:
            f.write("threads = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        ok = wait_index(c, lambda i: i.get(("c", "1"), {}).get("state") == "READY" and ("b", "1") not in i,
                        timeout=300)
        got = models_threads(d)
        check(ok and got == {"a": (1, 1), "c": (1, 1)},
              f"b gone, c asks for 1 thread: it fits and loads; a keeps its 1 ({got})")
        check(d.log_text().count("model a version 1: loading") == 1, "a was not reloaded")
    finally:
        c.close()
        check(d.stop() == 0, "the CPU budget daemon stops cleanly")
def test_int8(effnetd, effnet, workdir):
    """A repository where one model runs int8 with the calibration beside
    its weights, one names (quoted, relative to its version's folder) a
    calibration made for other weights, and one serves fp32."""
    photos = sorted(dm.sample_photos().values())
    if len(photos) < 4:
        print(f"int8 in a repository: skipped, {len(photos)} photos (python3-matplotlib, python3-skimage)")
        return
    repo = os.path.join(workdir, "repo8")
    init_weights(effnet, "b0", 7, f"{repo}/q/1/model.safetensors")
    init_weights(effnet, "b0", 8, f"{repo}/wrong/1/model.safetensors")
    os.makedirs(f"{repo}/plain/1")
    shutil.copy(f"{repo}/q/1/model.safetensors", f"{repo}/plain/1/model.safetensors")
    cal = f"{repo}/q/1/calibration.json"
    p = subprocess.run([effnet, "calibrate", "--weights", f"{repo}/q/1/model.safetensors", "--images"] + photos +
                       ["--method", "mse", "--threshold", "-1", "-o", cal], capture_output=True, text=True,
                       timeout=900)
    check(p.returncode == 0 and os.path.exists(cal), f"effnet calibrate q/1: {p.stderr[-300:]}")
    selfcheck = dm.parse_json(open(cal, "rb").read())["selfcheck"]
    with open(f"{repo}/q/config.conf", "w") as f:
        f.write("[model]\nprecision = int8\nmax-batch = 2\n")
    with open(f"{repo}/wrong/config.conf", "w") as f:
        f.write('precision = int8\ncalibration = "../../q/1/calibration.json"\n')
    d = dm.Daemon(effnetd, None, workdir, "--model-repository", repo, name="repository-int8")
    c = V2Client(d.port)
    try:
        s, _, body = d.request("GET", "/v1/models")
        got = {(m["name"], m.get("version")): m for m in dm.parse_json(body)["models"]}
        q = got.get(("q", 1), {})
        k = q.get("int8") or {}
        same = all(abs(k.get(key, -1) - selfcheck[key]) < 1e-6 for key in
                   ("top1_agreement", "top5_overlap", "max_logit_diff", "rms_logit_diff"))
        check(s == 200 and q.get("state") == "READY" and q.get("precision") == "int8" and
              k.get("images") == selfcheck["images"] and same,
              f"/v1/models: q runs int8 with its calibration's self-check ({q.get('precision')}, {k})")
        plain = got.get(("plain", 1), {})
        check(plain.get("state") == "READY" and plain.get("precision") in ("fp32", "bf16") and "int8" not in plain,
              f"/v1/models: plain serves {plain.get('precision')} beside it")
        idx = index_of(c)
        wrong = idx.get(("wrong", None), {})
        check(wrong.get("state") == "UNAVAILABLE" and "other weights" in wrong.get("reason", ""),
              f"repository index: the calibration made for other weights is wrong's reason ({wrong})")
        check(repo not in wrong.get("reason", "") and "q/1/calibration.json" in wrong.get("reason", ""),
              f"the reason names the file inside the repository, not its absolute path ({wrong.get('reason')})")
        for model in ("q", "plain"):
            st, j = classify(d, f"/v1/models/{model}/classify", dm.read(photos[0]))
            check(st == 200 and len(j.get("predictions", [])) == TOP_K, f"{model} classifies ({st})")
        st, j = classify(d, "/v1/models/wrong/classify", TINY)
        check(st == 404, f"wrong serves nothing ({st})")
    finally:
        c.close()
        check(d.stop() == 0, "the int8 repository daemon stops cleanly")


def main():
    effnetd, effnet = dm.find_effnet_tools()
    with tempfile.TemporaryDirectory(prefix="effnetd-repository-") as workdir:
        repo = make_repository(effnet, workdir)
        a = dm.Daemon(effnetd, f"{repo}/b0/2/model.safetensors", workdir, name="single-v2")
        b = dm.Daemon(effnetd, f"{repo}/b0/1/model.safetensors", workdir, name="single-v1")
        r = dm.Daemon(effnetd, None, workdir, "--model-repository", repo, "--grpc-listen", "127.0.0.1:0",
                      name="repository")
        client = V2Client(r.port)
        try:
            test_listing(r, client)
            test_routes(r, a, b, client)
            test_grpc_metadata(r, workdir)
            test_refused_control(client)
            test_metrics_and_log(r)
            a.stop()
            b.stop()
            test_versions_under_load(r, client, repo, workdir)
        finally:
            client.close()
            for d in (a, b):
                d.stop()
            check(r.stop() == 0, "the repository daemon stops cleanly")
        test_cpu_budget(effnetd, workdir)
        test_explicit(effnetd, repo, workdir)
        test_poll(effnetd, repo, workdir)
        test_int8(effnetd, effnet, workdir)
    finish()


if __name__ == "__main__":
    main()
