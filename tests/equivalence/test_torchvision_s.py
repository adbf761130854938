#!/usr/bin/python3
"""EfficientNetV2-S against torchvision, fp32.

Usage: test_torchvision_s.py EFFNET

One calibrated random V2-S (torchvision structure, BN eps 1e-3) is saved
under torchvision names and compared at 384 and at an odd size (321); the
same weights under timm names with --padding symmetric (torchvision pads
symmetrically) are compared at 384. Pass: max |effnet - torch| <= 1e-3 x
std(torch logits) and the same top-5 order for every sample.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)


def main():
    exe = rt.effnet_path()
    out = rt.Outcome()
    with rt.workdir() as d:
        model = rt.make_reference("s", 384, seed=1)
        tv = os.path.join(d, "s-torchvision.safetensors")
        timm = os.path.join(d, "s-timm.safetensors")
        rt.save_model(model, tv, "torchvision")
        rt.save_model(model, timm, "timm")

        for size in (384, 321):
            x = rt.smooth_images(4, size, seed=100 + size)
            ref = rt.torch_logits(model, x)
            out.check(rt.check_not_collapsed(ref, f"torch V2-S @{size}"), f"reference @{size}")
            label = f"V2-S torchvision names @{size}"
            out.forward_matches(label, exe, tv, x, d, ref)
            if size == 384:
                label = "V2-S timm names, --padding symmetric @384"
                out.forward_matches(label, exe, timm, x, d, ref, padding="symmetric")
    out.exit()


if __name__ == "__main__":
    main()
