#!/usr/bin/python3
"""TF 'SAME' padding: timm-named weights against torch with explicit F.pad.

Usage: test_tf_same.py EFFNET VARIANT SIZE... (SIZE is N or HxW)

The reference is a calibrated random model whose every conv with a kernel
> 1 pads as TensorFlow does (out = ceil(in/s), the odd pixel after), applied
with F.pad. The weights are saved under timm names, for which effnet's
default padding is SAME. Pass: max |effnet - torch| <= 1e-3 x std and the
same top-5 per sample. Negative control, at sizes where any stride-2 conv
sees an even input: the same file with --padding symmetric must miss that
tolerance (and so must torch's own symmetric model), which shows that the
check can fail.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)


def main():
    exe = rt.effnet_path()
    if len(sys.argv) < 4 or sys.argv[2] not in rt.VARIANTS:
        sys.stderr.write(f"usage: {sys.argv[0]} EFFNET VARIANT SIZE...\n")
        return 1
    variant = sys.argv[2]
    sizes = [rt.parse_size(s) for s in sys.argv[3:]]
    name = variant.upper()
    out = rt.Outcome()
    with rt.workdir() as d:
        model = rt.make_reference(variant, sizes[0][0], seed=3, padding="same")
        symmetric = rt.to_symmetric(model)
        path = os.path.join(d, f"{variant}-timm.safetensors")
        rt.save_model(model, path, "timm")
        for h, w in sizes:
            tag = f"{h}" if h == w else f"{h}x{w}"
            x = rt.smooth_images(4, h, w, seed=300 + h + w)
            ref = rt.torch_logits(model, x)
            out.check(rt.check_not_collapsed(ref, f"torch {name} SAME @{tag}"), f"reference @{tag}")
            label = f"{name} timm names, default (SAME) padding @{tag}"
            out.forward_matches(label, exe, path, x, d, ref)
            label = f"{name} timm names, --padding same @{tag}"
            out.forward_matches(label, exe, path, x, d, ref, verbose=False, padding="same")
            if not rt.same_differs(h, w):
                print(f"     @{tag}: SAME and symmetric pads coincide, no negative control")
                continue
            label = f"torch symmetric vs SAME @{tag}"
            out.check(rt.expect_mismatch(label, ref, rt.torch_logits(symmetric, x)), label)
            label = f"negative control: {name} --padding symmetric @{tag}"
            got = out.attempt(label, rt.effnet_forward, exe, path, x, d, padding="symmetric")
            if got is not None:
                out.check(rt.expect_mismatch(label, ref, got), label)
    out.exit()


if __name__ == "__main__":
    sys.exit(main())
