#!/usr/bin/python3
"""Every manifest under deploy/kubernetes, deploy/kubernetes-tls and
deploy/kserve against the
published schemas kept in tests/schemas (Kubernetes' OpenAPI definitions,
KServe's CRDs; README.md there names their origin), with python3-jsonschema.
Strict, as kubeconform -strict is: a field the schema does not know is an
error (a typo such as `readinessprobe` would otherwise pass silently).
Also checks that the validator can fail: copies of the manifests with an
unknown field, a wrong type and a missing required field must be refused.
kubectl cannot do this offline: --dry-run=client still asks a cluster for
its OpenAPI and REST mappings, and CRDs need the cluster anyway. With
kubectl installed, the overlay deploy/kubernetes-tls is also rendered
(kubectl kustomize, offline) and the patched documents validated.
Secrets (deploy/kubernetes-tls) are checked against SECRET below, the
fields of io.k8s.api.core.v1.Secret as Kubernetes' API reference lists
them, since the kept extract of the OpenAPI document has no Secret.

Usage: test_manifests.py SOURCE_ROOT
"""

import copy
import glob
import json
import os
import shutil
import subprocess
import sys

try:
    import jsonschema
    import yaml
except ImportError:
    print("SKIP: needs python3-jsonschema and python3-yaml (scripts/install-deps.sh)")
    sys.exit(77)

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(ROOT, "tests", "schemas")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


# io.k8s.api.core.v1.Secret: its fields, strictly; metadata as ObjectMeta.
SECRET = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["v1"]},
        "kind": {"enum": ["Secret"]},
        "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "stringData": {"type": "object", "additionalProperties": {"type": "string"}},
        "type": {"type": "string"},
        "immutable": {"type": "boolean"},
    },
}


def strict(schema):
    """additionalProperties: false wherever properties are listed and the
    schema does not keep unknown fields itself."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def kubernetes_schemas():
    """{(apiVersion, kind): validator} from Kubernetes' definitions, and the
    definitions themselves (CRDs' metadata is checked against ObjectMeta)."""
    doc = json.load(open(os.path.join(SCHEMAS, "kubernetes-1.36.json")))
    defs = strict(doc["definitions"])
    # Types the OpenAPI document describes by a format, as JSON Schema types.
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    out = {}
    for name in doc["x-kinds"]:
        for gvk in defs[name].get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            schema = {"definitions": defs, "$ref": f"#/definitions/{name}"}
            out[(api, gvk["kind"])] = jsonschema.Draft4Validator(schema)
    return out, defs


def crd_schemas(defs):
    out = {}
    for path in sorted(glob.glob(os.path.join(SCHEMAS, "kserve-*.json"))):
        doc = json.load(open(path))
        schema = strict(doc["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        schema["definitions"] = defs
        out[(f"{doc['group']}/{doc['version']}", doc["kind"])] = jsonschema.Draft4Validator(schema)
    return out


def manifests():
    """(file, document) of every YAML document under deploy/kubernetes and
    deploy/kserve, the adapter's embedded config too."""
    for sub in ("kubernetes", "kubernetes-tls", "kserve"):
        for path in sorted(glob.glob(os.path.join(ROOT, "deploy", sub, "**", "*.yaml"), recursive=True)):
            for doc in yaml.safe_load_all(open(path)):
                if doc:
                    yield os.path.relpath(path, ROOT), doc


def errors(validators, doc):
    v = validators.get((doc.get("apiVersion"), doc.get("kind")))
    if v is None:
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def spoil(doc):
    """Three broken copies: an unknown field deep inside, a wrong type, a
    required field removed."""
    bad = []
    d = copy.deepcopy(doc)
    d.setdefault("spec", {})["replicaz"] = 2
    bad.append(("unknown field spec.replicaz", d))
    d = copy.deepcopy(doc)
    d["metadata"]["name"] = ["not", "a", "string"]
    bad.append(("metadata.name not a string", d))
    d = copy.deepcopy(doc)
    d.pop("spec", None)
    d["spec"] = {}
    bad.append(("empty spec", d))
    return bad


def main():
    k8s, defs = kubernetes_schemas()
    validators = dict(k8s)
    validators.update(crd_schemas(defs))
    validators[("v1", "Secret")] = jsonschema.Draft4Validator(dict(SECRET, definitions=defs))
    seen = []
    for path, doc in manifests():
        if doc.get("kind") == "Kustomization":
            # An overlay names its base by a relative path (../kubernetes).
            listed = {r for r in doc.get("resources", []) if not r.startswith("..")}
            here = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, os.path.dirname(path), "*.yaml"))}
            check(listed == here - {"kustomization.yaml"}, f"{path}: lists every manifest of its folder ({sorted(listed)})")
            continue
        errs = errors(validators, doc)
        seen.append((doc["apiVersion"], doc["kind"]))
        check(not errs, f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')} valid against "
                        f"{doc.get('apiVersion')} {errs[:5]}")
        if doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith((".yaml", ".yml")):
                    try:
                        yaml.safe_load(text)
                        ok = True
                    except yaml.YAMLError as e:
                        ok = False
                        print(e)
                    check(ok, f"{path}: data {key} is YAML")
    kubectl = shutil.which("kubectl")
    if kubectl:
        overlay = os.path.join(ROOT, "deploy", "kubernetes-tls")
        p = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"kubectl kustomize deploy/kubernetes-tls renders ({p.stderr.strip()[:200]})")
        rendered = [d for d in yaml.safe_load_all(p.stdout) if d] if p.returncode == 0 else []
        for doc in rendered:
            errs = errors(validators, doc)
            check(not errs, f"deploy/kubernetes-tls rendered: {doc.get('kind')} {doc['metadata'].get('name')} "
                            f"valid {errs[:5]}")
        dep = next((d for d in rendered if d.get("kind") == "Deployment"), {})
        pod = dep.get("spec", {}).get("template", {}).get("spec", {})
        c = (pod.get("containers") or [{}])[0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        names = {d["metadata"]["name"] for d in rendered if d.get("kind") == "Secret"}
        check(env.get("EFFNETD_TLS_CERT", "").startswith(mounts.get("tls", "?") + "/")
              and env.get("EFFNETD_TLS_KEY", "").startswith(mounts.get("tls", "?") + "/")
              and env.get("EFFNETD_API_KEYS_FILE", "").startswith(mounts.get("api-keys", "?") + "/")
              and set(secrets.values()) <= names and len(secrets) == 2,
              f"deploy/kubernetes-tls: the settings name files of the mounted Secrets ({env}, {mounts}, {secrets})")
        check(all(c.get(p, {}).get("httpGet", {}).get("scheme") == "HTTPS"
                  for p in ("readinessProbe", "livenessProbe", "startupProbe")),
              "deploy/kubernetes-tls: the probes speak HTTPS")
    else:
        print("note: kubectl not installed; deploy/kubernetes-tls not rendered")
    kinds = {k for _, k in seen}
    check({"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
           "ServingRuntime", "InferenceService"} <= kinds, f"all kinds present ({sorted(kinds)})")

    # The validator refuses what it should: every kind, three ways.
    refused = []
    for path, doc in manifests():
        if doc.get("kind") in ("Kustomization", "ConfigMap"):
            continue
        for what, bad in spoil(doc):
            # Services and PodDisruptionBudgets have no required spec field.
            if not errors(validators, bad) and not (what == "empty spec" and doc["kind"] in ("Service", "PodDisruptionBudget")):
                refused.append(f"{path} {doc['kind']}: {what} passed")
    check(not refused, f"broken copies of the manifests are refused ({refused[:4]})")
    typo = copy.deepcopy(next(d for _, d in manifests() if d.get("kind") == "Deployment"))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    check(bool(errors(validators, typo)), "a misspelt container field (readinessprobe) is refused")

    if failures:
        print(f"FAILED {len(failures)}: " + "; ".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
