#!/usr/bin/python3
"""--bn-eps: weights trained with BN eps 1e-5 (timm efficientnetv2_* that
are not TF ports: symmetric padding, eps 1e-5).

Usage: test_bn_eps.py EFFNET

B0 with BN eps 1e-5, timm names, at 224: effnet with --padding symmetric
--bn-eps 1e-5 must match torch (1e-3 x std, same top-5). Negative control:
without --bn-eps (the timm default 1e-3) it must miss that tolerance, when
torch itself shows that the eps changes the logits by more than 10 x the
tolerance.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)


def main():
    exe = rt.effnet_path()
    out = rt.Outcome()
    with rt.workdir() as d:
        model = rt.make_reference("b0", 224, seed=6, bn_eps=1e-5)
        path = os.path.join(d, "b0-timm-eps1e-5.safetensors")
        rt.save_model(model, path, "timm")
        x = rt.smooth_images(4, 224, seed=601)
        ref = rt.torch_logits(model, x)
        out.check(rt.check_not_collapsed(ref, "torch B0 eps 1e-5 @224"), "reference")
        label = "B0 timm names, --padding symmetric --bn-eps 1e-5 @224"
        out.forward_matches(label, exe, path, x, d, ref, padding="symmetric", bn_eps=1e-5)

        for bn in rt.bn_modules(model):
            bn.eps = 1e-3
        wrong = rt.torch_logits(model, x)
        ratio = float(abs(wrong - ref).max() / ref.std())
        print(f"     torch with eps 1e-3 instead of 1e-5: ratio {ratio:.3g}")
        if ratio > 10 * 1e-3:
            label = "negative control: B0 --padding symmetric, default eps"
            got = out.attempt(label, rt.effnet_forward, exe, path, x, d, padding="symmetric")
            if got is not None:
                out.check(rt.expect_mismatch(label, ref, got), label)
        else:
            print("     eps barely matters on this network: no negative control")
    out.exit()

if __name__ == "__main__":
    main()
