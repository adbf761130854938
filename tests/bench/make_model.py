#!/usr/bin/python3
"""Builds one seeded random-weight torchvision EfficientNetV2 and writes it
twice: as ONNX (for ONNX Runtime) and as safetensors with torchvision tensor
names (for effnet and for the PyTorch run, which loads it back).

Speed does not depend on the weight values, but degenerate activations can
(denormals, overflow): the BN running statistics are therefore calibrated with
a few train-mode passes over smooth random images, as a trained net would have.

Run with Debian's interpreter (/usr/bin/python3) so python3-torch and
python3-torchvision are visible.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

VARIANTS = ("s", "m", "l")


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, numpy float32 array). Little-endian F32 only."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        n = arr.nbytes
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + n]}
        blobs.append(arr)
        offset += n
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for arr in blobs:
            f.write(arr.tobytes())
    os.replace(tmp, path)


def read_safetensors(path):
    """Returns {name: numpy float32 array} (F32 only; enough for this bench)."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} not supported here")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype="<f4", count=(b - a) // 4,
                                  offset=base + a).reshape(info["shape"])
    return out


# ---------------------------------------------------------------- model

def build_model(variant):
    import torchvision
    ctor = getattr(torchvision.models, f"efficientnet_v2_{variant}")
    return ctor(weights=None).eval()


def smooth_images(torch, n, size, gen):
    """Low-frequency random images, roughly ImageNet-normalized."""
    small = torch.rand(n, 3, 12, 12, generator=gen)
    x = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear",
                                        align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def calibrate_bn(torch, model, size, gen, passes=2, batch=4):
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(smooth_images(torch, batch, size, gen))
    model.eval()


def state_tensors(model):
    return [(k, v.detach().cpu().numpy())
            for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="s", choices=VARIANTS)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--onnx", required=True, help="output .onnx (dynamic batch)")
    ap.add_argument("--safetensors", help="output .safetensors (needed without --load)")
    ap.add_argument("--load", metavar="SAFETENSORS",
                    help="export these torchvision-named weights instead of seeded random ones (e.g. "
                         "`effnet init-weights --scheme torchvision`, whose classifier spreads the logits)")
    args = ap.parse_args()
    if not args.load and not args.safetensors:
        ap.error("--safetensors is required without --load")

    import torch
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1000)
    model = build_model(args.variant)
    if args.load:
        sd = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(args.load).items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            sys.exit(f"make_model: {args.load}: weight names differ from torchvision: "
                     f"missing {missing[:5]} unexpected {unexpected[:5]}")
        model.eval()
    else:
        calibrate_bn(torch, model, args.size, gen)
    if args.safetensors:
        write_safetensors(args.safetensors, state_tensors(model),
                          {"format": "pt",
                           "source": f"torchvision efficientnet_v2_{args.variant}, "
                                     + (f"from {os.path.basename(args.load)}" if args.load
                                        else f"random seed {args.seed}")})

    x = smooth_images(torch, 1, args.size, gen)
    tmp = args.onnx + ".tmp"
    torch.onnx.export(model, x, tmp, opset_version=args.opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    os.replace(tmp, args.onnx)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: efficientnet_v2_{args.variant} " + (f"from {args.load}" if args.load else f"seed {args.seed}")
          + f", {n} parameters, "
          f"size {args.size}", file=sys.stderr)


if __name__ == "__main__":
    main()
