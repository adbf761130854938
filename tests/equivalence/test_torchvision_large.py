#!/usr/bin/python3
"""EfficientNetV2-M or -L against torchvision, fp32, torchvision names.

Usage: test_torchvision_large.py EFFNET VARIANT SIZE [BATCH]

A calibrated random model from torchvision's own constructor, compared at
SIZE (smaller than the published 480 to keep the suite short). Pass: max
|effnet - torch| <= 1e-3 x std(torch logits), the same top-5 per sample.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)


def main():
    exe = rt.effnet_path()
    if len(sys.argv) < 4 or sys.argv[2] not in ("m", "l"):
        sys.stderr.write(f"usage: {sys.argv[0]} EFFNET m|l SIZE [BATCH]\n")
        return 1
    variant, size = sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    out = rt.Outcome()
    with rt.workdir() as d:
        model = rt.make_reference(variant, size, seed=2)
        path = os.path.join(d, f"{variant}-torchvision.safetensors")
        rt.save_model(model, path, "torchvision")
        x = rt.smooth_images(batch, size, seed=200 + size)
        ref = rt.torch_logits(model, x)
        del model
        out.check(rt.check_not_collapsed(ref, f"torch V2-{variant.upper()} @{size}"), "reference")
        label = f"V2-{variant.upper()} torchvision names @{size}"
        out.forward_matches(label, exe, path, x, d, ref)
    out.exit()


if __name__ == "__main__":
    sys.exit(main())
