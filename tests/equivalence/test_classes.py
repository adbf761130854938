#!/usr/bin/python3
"""A fine-tuned head: 10 classes instead of 1000.

Usage: test_classes.py EFFNET

The class count must come from the classifier's shape. V2-S with
torchvision names (symmetric padding) at 224 and B1 with timm names (TF
SAME) at 240, both with a 10-way classifier; fp32 comparison as in the
other tests (1e-3 x std, same top-5 order).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)

CLASSES = 10


def main():
    exe = rt.effnet_path()
    out = rt.Outcome()
    cases = (("s", "torchvision", "symmetric", 224), ("b1", "timm", "same", 240))
    with rt.workdir() as d:
        for variant, scheme, padding, size in cases:
            model = rt.make_reference(variant, size, seed=5, num_classes=CLASSES, padding=padding)
            path = os.path.join(d, f"{variant}-{scheme}-{CLASSES}.safetensors")
            rt.save_model(model, path, scheme)
            x = rt.smooth_images(4, size, seed=500 + size)
            ref = rt.torch_logits(model, x)
            label = f"{variant.upper()} {scheme} names, {CLASSES} classes @{size}"
            out.check(rt.check_not_collapsed(ref, f"torch {label}"), f"reference {label}")
            out.forward_matches(label, exe, path, x, d, ref)
    out.exit()


if __name__ == "__main__":
    main()
