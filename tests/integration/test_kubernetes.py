#!/usr/bin/python3
"""Offline check of deploy/kubernetes/: YAML structure (python3-yaml and a
small schema of the fields that matter), selectors that match, CPU
requests = limits, a grace period longer than the drain, weights from a
volume, and probes whose paths and ports are the daemon's: the port is the
one effnetd and the container image listen on, and every probe path answers
200 from a real effnetd. `kubectl kustomize` too when kubectl is installed.

Usage: test_kubernetes.py EFFNETD EFFNET
"""

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile

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
    check(w == "/models/model.safetensors" and w in entry, "the weights path is the image's documented one")

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

    # Every probe path answers 200 from the real daemon.
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
        finally:
            d.stop()
    finish()


if __name__ == "__main__":
    main()
