#!/usr/bin/python3
"""Makes the schema files of this folder from their published sources (see
README.md): the definitions the manifests of deploy/ need, descriptions
removed, nothing else changed.

  extract.py kubernetes SWAGGER_JSON ORIGIN > kubernetes.json
  extract.py crd CRD_YAML ORIGIN [DROP...] > kserve-KIND.json
      DROP: dotted property paths left out of the CRD's schema
      (spec.explainer, spec.predictor.sklearn, ...)
"""

import json
import sys

import yaml

# The kinds deploy/ uses, by their definition names in Kubernetes' OpenAPI.
KUBERNETES_KINDS = [
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
    "io.k8s.api.policy.v1.PodDisruptionBudget",
]


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k != "description"}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def refs(x, out):
    if isinstance(x, dict):
        r = x.get("$ref")
        if isinstance(r, str) and r.startswith("#/definitions/"):
            out.add(r[len("#/definitions/"):])
        for v in x.values():
            refs(v, out)
    elif isinstance(x, list):
        for v in x:
            refs(v, out)


def kubernetes(path, origin):
    defs = json.load(open(path))["definitions"]
    keep, todo = set(), list(KUBERNETES_KINDS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found = set()
        refs(defs[name], found)
        todo.extend(found - keep)
    return {"x-origin": origin, "x-kinds": KUBERNETES_KINDS,
            "definitions": {k: strip(defs[k]) for k in sorted(keep)}}


def crd(path, origin, drops):
    doc = yaml.safe_load(open(path))
    version = next(v for v in doc["spec"]["versions"] if v.get("storage"))
    schema = strip(version["schema"]["openAPIV3Schema"])
    for drop in drops:
        node = schema
        *parents, last = drop.split(".")
        for p in parents:
            node = node["properties"][p]
        del node["properties"][last]
    return {"x-origin": origin, "x-dropped": drops, "group": doc["spec"]["group"],
            "kind": doc["spec"]["names"]["kind"], "version": version["name"], "openAPIV3Schema": schema}


def main():
    what, path, origin = sys.argv[1:4]
    out = kubernetes(path, origin) if what == "kubernetes" else crd(path, origin, sys.argv[4:])
    json.dump(out, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
