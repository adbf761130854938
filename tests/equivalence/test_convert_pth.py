#!/usr/bin/python3
"""torchvision .pth checkpoints through tools/pth2safetensors.py.

Usage: test_convert_pth.py EFFNET

A V2-S with torchvision's structure and calibrated random weights is saved
the way torchvision publishes its weights (torch.save of the state dict,
num_batches_tracked included), once plain and once wrapped as a training
checkpoint ({"model": state_dict} with "module." prefixes); the converter
turns each into safetensors and effnet's logits must match torch's (1e-3 x
std, same top-5 order). A non-EfficientNet state dict must be refused.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reftools as rt  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402

CONVERTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                         "pth2safetensors.py")


def convert(pth, out):
    return subprocess.run(["/usr/bin/python3", CONVERTER, pth, out], capture_output=True, text=True)


def main():
    exe = rt.effnet_path()
    out = rt.Outcome()
    size = 224
    with rt.workdir() as d:
        model = rt.make_reference("s", size, seed=11, padding="symmetric")
        sd = model.state_dict()
        assert any(k.endswith("num_batches_tracked") for k in sd)
        plain = os.path.join(d, "plain.pth")
        wrapped = os.path.join(d, "wrapped.pth")
        torch.save(sd, plain)
        torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, wrapped)
        x = rt.smooth_images(4, size, seed=1100)
        ref = rt.torch_logits(model, x)
        out.check(rt.check_not_collapsed(ref, "torch V2-S"), "reference")
        for name, pth in (("plain", plain), ("training checkpoint", wrapped)):
            st = os.path.join(d, f"{name.split()[0]}.safetensors")
            r = convert(pth, st)
            if not out.check(r.returncode == 0, f"convert {name}: {r.stderr.strip()}"):
                continue
            out.forward_matches(f"V2-S from a {name} .pth @{size}", exe, st, x, d, ref)
        other = os.path.join(d, "other.pth")
        torch.save({"fc.weight": torch.zeros(2, 2)}, other)
        r = convert(other, os.path.join(d, "other.safetensors"))
        out.check(r.returncode != 0 and "features.0.0.weight" in r.stderr,
                  f"a non-EfficientNet state dict is refused (exit {r.returncode}: {r.stderr.strip()})")
    out.exit()


if __name__ == "__main__":
    main()
