#!/usr/bin/python3
"""Offline check of deploy/kubernetes/ and deploy/kserve/ (the schemas
themselves: tests/unit/test_manifests.py): the fields that matter,
selectors that match, CPU requests = limits, a grace period longer than
preStop + drain, weights from a volume, and probes whose paths and ports
are the daemon's: the port is the one effnetd and the container image
listen on, and every probe path answers 200 from a real effnetd. The HPA
scales on custom metrics that the Prometheus adapter rules make from
series on the daemon's /metrics (promtool parses the rules' queries). The
KServe runtime and InferenceServices agree with each other and the image.
At SIGTERM, readiness turns 503 while the main listener still answers.
`kubectl kustomize` too when kubectl is installed.

Usage: test_kubernetes.py EFFNETD EFFNET
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

try:
    import yaml
except ImportError:
    print("SKIP: needs python3-yaml")
    sys.exit(dm.SKIP)

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KDIR = os.path.join(SOURCE_ROOT, "deploy", "kubernetes")


# kind -> (apiVersion, required paths with their types)
SCHEMA = {
    "Deployment": ("apps/v1", {"spec.replicas": int, "spec.selector.matchLabels": dict,
                               "spec.template.metadata.labels": dict, "spec.template.spec.containers": list,
                               "spec.template.spec.terminationGracePeriodSeconds": int}),
    "Service": ("v1", {"spec.selector": dict, "spec.ports": list}),
    "HorizontalPodAutoscaler": ("autoscaling/v2", {"spec.scaleTargetRef.kind": str, "spec.scaleTargetRef.name": str,
                                                   "spec.minReplicas": int, "spec.maxReplicas": int,
                                                   "spec.metrics": list}),
    "PodDisruptionBudget": ("policy/v1", {"spec.selector.matchLabels": dict}),
}
CONTAINER_KEYS = {"name", "image", "imagePullPolicy", "ports", "env", "resources", "readinessProbe",
                  "livenessProbe", "startupProbe", "lifecycle", "securityContext", "volumeMounts", "args",
                  "command"}


def get(doc, path):
    for k in path.split("."):
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def cpu(v):
    v = str(v)
    return float(v[:-1]) / 1000 if v.endswith("m") else float(v)


def main():
    effnetd, effnet = dm.find_effnet_tools()
    docs = {}
    for name in sorted(os.listdir(KDIR)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for d in yaml.safe_load_all(open(os.path.join(KDIR, name))):
                if d:
                    docs[d.get("kind")] = d
    check(set(docs) == set(SCHEMA), f"Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget ({sorted(docs)})")
    for kind, (api, fields) in SCHEMA.items():
        d = docs.get(kind, {})
        bad = [p for p, t in fields.items() if not isinstance(get(d, p), t)]
        check(d.get("apiVersion") == api and get(d, "metadata.name") and not bad,
              f"{kind}: apiVersion {api}, a name, fields {sorted(fields)} (bad: {bad})")
    dep, svc = docs.get("Deployment", {}), docs.get("Service", {})
    pdb, hpa = docs.get("PodDisruptionBudget", {}), docs.get("HorizontalPodAutoscaler", {})
    labels = get(dep, "spec.template.metadata.labels") or {}
    sel = get(dep, "spec.selector.matchLabels") or {}
    check(sel and all(labels.get(k) == v for k, v in sel.items()), "Deployment selector matches its pods")
    check(all(labels.get(k) == v for k, v in (get(svc, "spec.selector") or {"x": 1}).items()),
          "Service selects the pods")
    check(all(labels.get(k) == v for k, v in (get(pdb, "spec.selector.matchLabels") or {"x": 1}).items()),
          "PodDisruptionBudget selects the pods")
    check(get(hpa, "spec.scaleTargetRef.kind") == "Deployment"
          and get(hpa, "spec.scaleTargetRef.name") == get(dep, "metadata.name")
          and get(hpa, "spec.minReplicas") <= get(hpa, "spec.maxReplicas"), "HPA scales the Deployment")
    check(get(pdb, "spec.minAvailable") is not None and get(pdb, "spec.minAvailable") < get(hpa, "spec.minReplicas"),
          "PDB leaves room to evict one pod at the minimum scale")

    c = (get(dep, "spec.template.spec.containers") or [{}])[0]
    check(set(c) <= CONTAINER_KEYS, f"container has only known fields ({sorted(set(c) - CONTAINER_KEYS)})")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    req, lim = get(c, "resources.requests") or {}, get(c, "resources.limits") or {}
    check("cpu" in req and "cpu" in lim and cpu(req["cpu"]) == cpu(lim["cpu"]) and cpu(req["cpu"]) == int(cpu(req["cpu"])),
          f"CPU requests = limits, whole CPUs ({req.get('cpu')}, {lim.get('cpu')})")
    drain = int(env.get("EFFNETD_DRAIN_TIMEOUT", 30))
    pre = get(c, "lifecycle.preStop.exec.command") or []
    pre_s = int(pre[-1]) if pre and str(pre[-1]).isdigit() else 0
    grace = get(dep, "spec.template.spec.terminationGracePeriodSeconds") or 30
    check(grace > drain + pre_s, f"termination grace {grace} s > drain {drain} s + preStop {pre_s} s")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in get(dep, "spec.template.spec.volumes") or []}
    w = env.get("EFFNETD_WEIGHTS", "")
    check(any(w.startswith(p + "/") and mounts[p] in vols for p in mounts), f"weights {w} come from a volume")
    containerfile = open(os.path.join(SOURCE_ROOT, "deploy", "container", "Containerfile")).read()
    entry = open(os.path.join(SOURCE_ROOT, "deploy", "container", "entrypoint.sh")).read()
    check(w == "/models/model.safetensors" and "EFFNETD_MODEL_DIR:-/models}" in entry
          and '"$dir/model.safetensors"' in entry, "the weights path is the image's documented one")

    # Ports: the container port, the listen address, the image and the daemon's default.
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    listen_port = int(env.get("EFFNETD_LISTEN", ":0").rsplit(":", 1)[1])
    image_port = re.search(r"EFFNETD_LISTEN=[\d.]+:(\d+)", containerfile)
    out = subprocess.run([effnetd, "--print-config", "--weights", "x"], capture_output=True, text=True).stdout
    default_port = int(re.search(r"^listen = .*:(\d+)", out, re.M).group(1))
    check(ports.get("http") == listen_port == default_port == int(image_port.group(1))
          and re.search(rf"^EXPOSE {listen_port}$", containerfile, re.M),
          f"port {ports.get('http')}: container, EFFNETD_LISTEN, image, daemon default ({default_port})")
    svc_ports = get(svc, "spec.ports") or [{}]
    check(all(p.get("targetPort") in ports or p.get("targetPort") in ports.values() for p in svc_ports),
          "Service targets the container port")
    probes = {k: get(c, f"{k}.httpGet") for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    check(get(probes["readinessProbe"], "path") == "/readyz" and get(probes["livenessProbe"], "path") == "/healthz",
          "readiness on /readyz, liveness on /healthz")
    # Probes and metrics: the admin listener, which clients of the main port
    # cannot exhaust.
    admin_port = int(env.get("EFFNETD_ADMIN_LISTEN", ":0").rsplit(":", 1)[1])
    image_admin = re.search(r"EFFNETD_ADMIN_LISTEN=[\d.]+:(\d+)", containerfile)
    check(ports.get("admin") == admin_port != listen_port and image_admin and int(image_admin.group(1)) == admin_port
          and re.search(rf"^EXPOSE {admin_port}$", containerfile, re.M),
          f"admin port {ports.get('admin')}: container, EFFNETD_ADMIN_LISTEN and image agree")
    check(all(p and p.get("port") in ("admin", admin_port) for p in probes.values()),
          "every probe targets the admin listener")
    annotations = get(dep, "spec.template.metadata.annotations") or {}
    check(annotations.get("prometheus.io/port") == str(admin_port), "metrics are scraped from the admin listener")

    kubectl = shutil.which("kubectl")
    if kubectl:
        p = subprocess.run([kubectl, "kustomize", KDIR], capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and p.stdout.count("\nkind: ") + p.stdout.startswith("kind: ") >= 4,
              f"kubectl kustomize renders the manifests ({p.stderr.strip()[:200]})")

    kserve = check_kserve(containerfile, entry)
    adapter = check_adapter_rules(hpa)

    # Every probe path answers 200 from the real daemon; the series the
    # adapter rules read are on its /metrics; readiness goes false at
    # SIGTERM while the listener still answers.
    with tempfile.TemporaryDirectory(prefix="effnetd-k8s-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        # The kubelet sends the pod's address as Host: the admin listener
        # on the manifest's address (its port picked here) answers it.
        admin_host = env.get("EFFNETD_ADMIN_LISTEN", "").rsplit(":", 1)[0]
        check(admin_host not in ("", "127.0.0.1", "localhost", "[::1]"),
              f"the admin listener is not on loopback in the pod ({admin_host!r}), so it answers any Host")
        d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 1, "--admin-listen", f"{admin_host or '0.0.0.0'}:0")
        try:
            m = re.search(r"admin \(probes, metrics\) listening on http://[^ ]*:(\d+)", d.log_text())
            admin = int(m.group(1)) if m else 0
            paths = [p["path"] for p in probes.values() if p] + [annotations.get("prometheus.io/path", "/metrics")]
            paths += kserve["admin_paths"]
            got = {}
            for p in paths:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
                try:
                    c.request("GET", p, headers={"Host": f"10.244.3.17:{admin}"})
                    got[p] = c.getresponse().status
                except (OSError, http.client.HTTPException) as e:
                    got[p] = type(e).__name__
                finally:
                    c.close()
            check(all(s == 200 for s in got.values()),
                  f"probe paths answer 200 on the admin listener, Host the pod's address ({got})")
            got = {p: dm.get_status(d.port, p, timeout=30) for p in kserve["main_paths"]}
            check(got and all(s == 200 for s in got.values()),
                  f"the canary's probe paths answer 200 on the main listener ({got})")
            # One request through, so that the histogram has observations.
            photos = dm.sample_photos()
            if "grace_hopper.jpg" in photos:
                d.classify(dm.read(photos["grace_hopper.jpg"]))
            status, _, body = d.request("GET", "/metrics")
            series = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()
                      if line and not line.startswith("#")}
            missing = sorted(set(adapter) - series)
            check(status == 200 and not missing, f"the series the adapter rules read are on /metrics ({sorted(adapter)}; missing {missing})")
            check_adapter_in_prometheus(d, admin, workdir)
            check_drain_order(d, admin)
        finally:
            d.stop()
    finish()


def adapter_queries(pod_regex):
    """{metric name: query} as the adapter runs them for one namespace and
    the pods pod_regex matches, grouped by pod."""
    path = os.path.join(KDIR, "monitoring", "prometheus-adapter.yaml")
    cm = next(d for d in yaml.safe_load_all(open(path)) if d)
    out = {}
    for r in yaml.safe_load(cm["data"]["config.yaml"])["rules"]:
        series = re.match(r"^\s*(\w+)", r["seriesQuery"]).group(1)
        name = re.sub(r["name"]["matches"], r["name"]["as"], series) if r["name"].get("as") else series
        q = r["metricsQuery"].replace("<<.Series>>", series)
        q = q.replace("<<.LabelMatchers>>", f'namespace="default",pod=~"{pod_regex}"').replace("<<.GroupBy>>", "pod")
        out[name] = q
    return out


def check_adapter_in_prometheus(d, admin, workdir):
    """Debian's Prometheus scrapes the daemon's admin /metrics (labelled as
    a pod would be) while requests flow; the adapter rules' queries then
    give one value per pod: the mean queue wait, which must agree with the
    daemon's own histogram, and the requests in flight."""
    prom = shutil.which("prometheus")
    photos = dm.sample_photos()
    if not prom or "grace_hopper.jpg" not in photos:
        print("note: no prometheus binary or sample photo; the adapter queries were only parsed")
        return
    image = dm.read(photos["grace_hopper.jpg"])
    port = dm.free_port()
    cfg = os.path.join(workdir, "prometheus.yml")
    with open(cfg, "w") as f:
        yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "scrape_configs": [{"job_name": "effnetd", "scrape_interval": "1s",
                                            "static_configs": [{"targets": [f"127.0.0.1:{admin}"],
                                                                "labels": {"namespace": "default",
                                                                           "pod": "effnetd-a"}}]}]}, f)
    log = open(os.path.join(workdir, "prometheus.log"), "wb")
    p = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
                          f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and dm.get_status(port, "/-/ready") != 200:
            time.sleep(0.2)
        before = d.metrics()
        stop = time.monotonic() + 8
        clients = []

        def load():
            while time.monotonic() < stop:
                d.classify(image)
        for _ in range(3):
            t = threading.Thread(target=load)
            t.start()
            clients.append(t)
        for t in clients:
            t.join()
        after = d.metrics()
        time.sleep(2.5)   # two more scrapes
        n = after["effnetd_queue_wait_seconds_count"] - before["effnetd_queue_wait_seconds_count"]
        mean = (after["effnetd_queue_wait_seconds_sum"] - before["effnetd_queue_wait_seconds_sum"]) / max(n, 1)
        got = {}
        for name, q in adapter_queries("effnetd-a|effnetd-b").items():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            res = json.loads(c.getresponse().read())
            c.close()
            vec = res.get("data", {}).get("result", [])
            got[name] = {v["metric"].get("pod"): float(v["value"][1]) for v in vec}
        wait = got.get("effnetd_queue_wait_seconds_mean", {})
        check(list(wait) == ["effnetd-a"] and n > 0 and 0.5 * mean <= wait["effnetd-a"] <= 2 * mean,
              f"Prometheus: the adapter's queue wait per pod agrees with the daemon's histogram "
              f"({wait}, daemon {mean * 1000:.1f} ms over {n:.0f} requests)")
        flight = got.get("effnetd_http_inflight_requests", {})
        check(list(flight) == ["effnetd-a"] and 0 < flight["effnetd-a"] <= 4,
              f"Prometheus: the adapter's requests in flight per pod ({flight}; 3 clients)")
    finally:
        p.terminate()
        p.wait(60)
        log.close()


def check_drain_order(d, admin):
    """SIGTERM with a request still sending its body: /readyz turns 503 at
    once while the main listener still takes connections (new requests get
    503 draining with Retry-After); the request in flight is answered 200;
    then the process exits and the listener is gone. Endpoints and load
    balancers see the pod unready before it stops listening."""
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        check(False, "needs the sample photo of python3-matplotlib")
        return
    image = dm.read(photos["grace_hopper.jpg"])
    s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    try:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                  + f"Content-Length: {len(image)}\r\n\r\n".encode() + image[:1000])
        time.sleep(0.5)
        d.proc.send_signal(signal.SIGTERM)
        ready, main, retry_after = None, None, None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready = dm.get_status(admin, "/readyz", timeout=5)
            if ready == 503:
                break
            time.sleep(0.05)
        try:
            status, hdrs, body = d.request("POST", "/v1/classify", image, {"Content-Type": "image/jpeg"}, timeout=30)
            main, retry_after = status, hdrs.get("retry-after")
        except OSError as e:
            main = type(e).__name__
        check(ready == 503 and main == 503 and retry_after,
              f"after SIGTERM: admin /readyz {ready} while the main listener still answers ({main}, "
              f"Retry-After {retry_after})")
        check(d.proc.poll() is None, "the daemon waits for the request still sending its body")
        s.sendall(image[1000:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        check(answer.startswith(b"HTTP/1.1 200"), f"the request in flight at SIGTERM is answered 200 ({answer[:40]!r})")
    finally:
        s.close()
    rc = d.proc.wait(60)
    check(rc == 0, f"then effnetd exits 0 ({rc})")
    try:
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    check(refused, "and only then the main listener is gone")


def check_kserve(containerfile, entry):
    """deploy/kserve: the runtime and the InferenceServices agree with each
    other, with the image and with the drain. Returns the probe paths to
    ask a real daemon: {'admin_paths': [...], 'main_paths': [...]}."""
    kdir = os.path.join(SOURCE_ROOT, "deploy", "kserve")
    docs = []
    for name in sorted(os.listdir(kdir)):
        if name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(open(os.path.join(kdir, name))) if d]
    runtimes = [d for d in docs if d["kind"] == "ServingRuntime"]
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    check(len(runtimes) == 1 and len(isvcs) >= 2, f"one ServingRuntime, InferenceServices ({len(runtimes)}, {len(isvcs)})")
    rt = runtimes[0] if runtimes else {"spec": {"containers": [{}]}, "metadata": {}}
    c = rt["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(c.get("name") == "kserve-container", "the runtime's container is KServe's kserve-container")
    check(env.get("EFFNETD_MODEL_DIR") == "/mnt/models" and "EFFNETD_MODEL_DIR" in entry,
          "weights from /mnt/models, where KServe's storage initializer puts them, through the entrypoint")
    listen = int(env.get("EFFNETD_LISTEN", ":0").rsplit(":", 1)[1])
    admin = int(env.get("EFFNETD_ADMIN_LISTEN", ":0").rsplit(":", 1)[1])
    ports = [p.get("containerPort") for p in c.get("ports", [])]
    check(ports == [listen] and re.search(rf"EFFNETD_LISTEN=[\d.]+:{listen}\b", containerfile),
          f"the runtime serves on the image's port, its only declared port ({ports}, {listen})")
    probes = {k: get(c, f"{k}.httpGet") or {} for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    check(all(p.get("port") == admin for p in probes.values())
          and re.search(rf"EFFNETD_ADMIN_LISTEN=[\d.]+:{admin}\b", containerfile)
          and probes["readinessProbe"].get("path") == "/readyz",
          f"the runtime's probes ask the admin listener ({admin}), readiness /readyz")
    anns = get(rt, "spec.annotations") or {}
    check(anns.get("prometheus.kserve.io/port") == str(admin), "metrics scraped from the admin listener")
    formats = {f["name"] for f in get(rt, "spec.supportedModelFormats") or []}
    drain = int(env.get("EFFNETD_DRAIN_TIMEOUT", 30))
    pre = get(c, "lifecycle.preStop.exec.command") or []
    pre_s = int(pre[-1]) if pre and str(pre[-1]).isdigit() else 0
    main_paths = []
    for isvc in isvcs:
        name = get(isvc, "metadata.name")
        m = get(isvc, "spec.predictor.model") or {}
        check(get(m, "modelFormat.name") in formats and m.get("runtime") == get(rt, "metadata.name")
              and m.get("protocolVersion") in (get(rt, "spec.protocolVersions") or []),
              f"{name}: the runtime's model format, name and protocol")
        check(str(m.get("storageUri", "")).split(":", 1)[0] in ("pvc", "s3", "gs", "hf", "https", "http"),
              f"{name}: weights from a storageUri ({m.get('storageUri')})")
        grace = get(isvc, "spec.predictor.terminationGracePeriodSeconds") or 30
        check(grace > drain + pre_s, f"{name}: termination grace {grace} s > drain {drain} s + preStop {pre_s} s")
        for k in ("readinessProbe", "livenessProbe"):
            p = get(m, f"{k}.httpGet")
            if p:
                check(p.get("port") == listen, f"{name}: its own {k} asks the serving port (Knative)")
                main_paths.append(p["path"])
    check(any(get(i, "spec.predictor.canaryTrafficPercent") is not None for i in isvcs),
          "an InferenceService rolls out as a canary (canaryTrafficPercent)")
    return {"admin_paths": [p["path"] for p in probes.values() if p.get("path")], "main_paths": main_paths}


def check_adapter_rules(hpa):
    """The HPA's custom metrics are made by the Prometheus adapter rules of
    deploy/kubernetes/monitoring, whose queries promtool accepts. Returns
    the series names the rules read, for the daemon's /metrics."""
    path = os.path.join(KDIR, "monitoring", "prometheus-adapter.yaml")
    cm = next(d for d in yaml.safe_load_all(open(path)) if d)
    rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    made, series = {}, set()
    for r in rules:
        s = re.match(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        name = re.sub(r["name"]["matches"], r["name"].get("as") or "", s) if r["name"].get("as") \
            else s
        made[name] = r
        series.add(s)
        series.update(re.findall(r"\b(effnetd_[a-z_]+)\b", r["metricsQuery"]))
        ov = get(r, "resources.overrides") or {}
        check(get(ov, "pod.resource") == "pod" and get(ov, "namespace.resource") == "namespace",
              f"adapter rule {name}: per pod and namespace")
    wanted = [get(m, "pods.metric.name") for m in get(hpa, "spec.metrics") or [] if m.get("type") == "Pods"]
    kinds = [m.get("type") for m in get(hpa, "spec.metrics") or []]
    check(wanted and "Resource" not in kinds, f"the HPA scales on per-pod custom metrics, not CPU ({kinds})")
    check(all(w in made for w in wanted), f"every HPA metric is made by an adapter rule ({wanted}; rules {sorted(made)})")
    promtool = shutil.which("promtool")
    if promtool:
        # The adapter fills the templates per request; promtool parses the result.
        exprs = []
        for r in rules:
            q = r["metricsQuery"].replace("<<.Series>>", re.match(r"^\s*(\w+)", r["seriesQuery"]).group(1))
            q = q.replace("<<.LabelMatchers>>", 'namespace="default",pod=~"effnetd-a|effnetd-b"')
            q = q.replace("<<.GroupBy>>", "pod")
            exprs.append(q)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"groups": [{"name": "adapter", "rules": [{"record": f"adapter:q{i}", "expr": e}
                                                                     for i, e in enumerate(exprs)]}]}, f)
        p = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        check(p.returncode == 0, f"promtool parses the adapter's queries ({(p.stdout + p.stderr).strip()[-300:]})")
    return series


if __name__ == "__main__":
    main()
