#!/usr/bin/python3
"""`effnet init-weights` against the torch models: names, shapes, counts.

Usage: test_init_weights.py EFFNET

For every variant (S, M, L, XL, B0..B3) under timm names, and S and M under
torchvision names: the file's tensors must be exactly the torch model's
(renamed for timm), with the same shapes; the parameter count must be the
published one; `effnet inspect` must accept the file. --classes 10 must
change the classifier only. The same seed must give the same bytes and
another seed other weights. Finally B0 (timm, TF SAME) and S (torchvision)
init-weights files are loaded into torch, and effnet forward must match
torch on them (1e-3 x std; the seeded weights need not be calibrated, so no
collapse check).
"""
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)

np = rt.np
RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def expected_shapes(variant, scheme, classes=1000):
    model = rt.build_table_model(variant, classes)
    return {k: tuple(v.shape) for k, v in rt.state_dict_arrays(model, scheme).items()}


def init_weights(exe, path, variant, scheme, seed=1, classes=None):
    args = ["init-weights", "--variant", variant, "--scheme", scheme, "--seed", seed, "-o", path]
    if classes:
        args += ["--classes", classes]
    rt.run_effnet(exe, args)
    return path


def check_layout(out, exe, d, variant, scheme, classes=None):
    label = f"init-weights {variant} {scheme}" + (f" {classes} classes" if classes else "")
    path = os.path.join(d, f"{variant}-{scheme}.safetensors")
    if out.attempt(label, init_weights, exe, path, variant, scheme, classes=classes) is None:
        return
    header, _ = rt.read_safetensors_header(path)
    got = {k: tuple(v["shape"]) for k, v in header.items()}
    want = expected_shapes(variant, scheme, classes or 1000)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    dtypes = sorted({v["dtype"] for v in header.values()})
    params = sum(int(np.prod(s)) for k, s in got.items() if not k.endswith(RUNNING))
    ok = not missing and not extra and not shapes
    if classes is None:
        ok &= params == rt.PARAM_COUNTS[variant]
    print(f"{'ok  ' if ok else 'FAIL'} {label}: {len(got)} tensors, {params} parameters, dtypes {dtypes}")
    for what, keys in (("missing", missing), ("unexpected", extra)):
        if keys:
            print(f"     {len(keys)} {what}: {keys[:10]}")
    for k in shapes[:10]:
        print(f"     {k}: shape {got[k]}, torch {want[k]}")
    out.check(ok, label)
    r = out.attempt(f"inspect {variant} {scheme}", rt.run_effnet, exe, ["inspect", path])
    if r is not None:
        print("     inspect: " + " | ".join(r.stdout.decode(errors="replace").strip().splitlines()[:4]))
    os.unlink(path)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    exe = rt.effnet_path()
    out = rt.Outcome()
    with rt.workdir() as d:
        for v in rt.VARIANTS:
            check_layout(out, exe, d, v, "timm")
        # M's head is features.8 where S's is features.7; L only adds time.
        for v in ("s", "m"):
            check_layout(out, exe, d, v, "torchvision")
        check_layout(out, exe, d, "b0", "timm", classes=10)

        a, b, c = (os.path.join(d, f"b0-seed-{n}.safetensors") for n in ("1", "1-again", "2"))
        for path, seed in ((a, 1), (b, 1), (c, 2)):
            out.attempt("init-weights b0 seed", init_weights, exe, path, "b0", "timm", seed=seed)
        if all(os.path.exists(p) for p in (a, b, c)):
            same, other = digest(a) == digest(b), digest(a) != digest(c)
            print(f"{'ok  ' if same and other else 'FAIL'} init-weights determinism: "
                  f"seed 1 twice {'identical' if same else 'DIFFERS'}, seed 2 "
                  f"{'differs' if other else 'IDENTICAL'}")
            out.check(same and other, "init-weights determinism")

        cases = (("b0", "timm", "same", 224), ("s", "torchvision", "symmetric", 224))
        for variant, scheme, padding, size in cases:
            label = f"forward on init-weights {variant} {scheme} @{size}"
            path = os.path.join(d, f"{variant}-{scheme}-forward.safetensors")
            if out.attempt(label, init_weights, exe, path, variant, scheme, seed=7) is None:
                continue
            model = rt.build_table_model(variant).eval()
            try:
                rt.load_arrays_into(model, rt.read_safetensors(path))
            except (KeyError, ValueError) as e:
                print(f"FAIL {label}: torch cannot load the file: {e}")
                out.check(False, label)
                continue
            if padding == "same":
                rt.to_tf_same(model)
            x = rt.smooth_images(2, size, seed=700 + size)
            ref = rt.torch_logits(model, x)
            if not np.all(np.isfinite(ref)) or not ref.std() > 0:
                print(f"FAIL {label}: torch logits are not finite or constant (std {ref.std()})")
                out.check(False, label)
                continue
            rt.check_not_collapsed(ref, f"torch {label} (informative only)")
            out.forward_matches(label, exe, path, x, d, ref)
    out.exit()


if __name__ == "__main__":
    main()
