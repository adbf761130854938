#!/usr/bin/python3
"""int8 plans against an ideal int8 emulation in PyTorch.

Usage: test_int8.py EFFNET VARIANT SIZE smooth|photos

Random weights cannot measure accuracy: whether int8 keeps a trained
network's top-1 is only known on that network and the user's images, which
is what `effnet calibrate`'s held-out self-check reports. What this test
measures is whether effnet computes what its calibration says, as well as
int8 arithmetic allows:

  1. A calibrated random torchvision model is saved (torchvision names);
     `effnet calibrate --size SIZE` runs on PNG images: smooth random ones,
     or the real photos Debian ships (matplotlib, scikit-image).
  2. The emulation is the same model with BatchNorm folded, in fp32, where
     every convolution the calibration puts in int8 sees its input
     fake-quantized with the calibration's scale (round half to even,
     saturated to [-128, 127]) and its weights fake-quantized per output
     channel with max|w|/127, as the engine does; everything else is fp32.
     A block whose output effnet keeps in s8 (where only int8 layers read
     it: docs/engine.md) has that output fake-quantized with its reader's
     scale, so the residual add sees the stream as the next conv does.
  3. `effnet forward --precision int8 --calibration` on images not used for
     the calibration. Pass: its rms logit error against fp32 torch is at most
     1.5x the emulation's own, and not zero (int8 ran).
  4. Negative control: the same calibration with every scale x8 (coarser)
     must miss that bound, which shows that the check can fail.
  5. `effnet bench --precision int8 --json` names no reference kernel.
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "integration"))
import reftools as rt  # noqa: E402  (exits 77 without torch)
import daemon as dm  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

BOUND = 1.5


def convs_in_order(model):
    """The convolutions effnet names ("stem", "blocks.N.conv1|dw|project",
    "head") in forward order: every Conv2d of the features except those of
    squeeze-excite."""
    se = set()
    for m in model.modules():
        if isinstance(m, torchvision.ops.SqueezeExcitation):
            se.update(id(c) for c in m.modules())
    return [m for m in model.features.modules() if isinstance(m, nn.Conv2d) and id(m) not in se]


def fake_quant(x, scale, lo=-128, hi=127):
    return torch.clamp(torch.round(x / scale), lo, hi) * scale


def stream_scales(blocks, layers):
    """The scale with which effnet writes each block's output in s8, or 0
    where it stays f32 (the rule of docs/engine.md, "The plan"): all that
    reads the output is int8 (the next block's first conv, or the head,
    and a residual add, which must itself write s8), no block that adds
    through its single kxk conv (expansion 1) is at either end, and a
    residual block's input is s8 too."""
    def scale(name):
        layer = layers.get(name)
        return float(np.float32(layer["scale"])) if layer and layer["int8"] else 0.0
    n = len(blocks)
    single = [f"blocks.{i}.project" not in layers for i in range(n)]
    res = [bool(b.use_res_connect) for b in blocks]
    out = [0.0] * n
    for i in reversed(range(n)):
        reader = scale(f"blocks.{i + 1}.conv1") if i + 1 < n else scale("head")
        ok = reader > 0 and scale(f"blocks.{i}.{'conv1' if single[i] else 'project'}") > 0 \
            and not (single[i] and res[i])
        if i + 1 < n:
            ok = ok and not single[i + 1] and (not res[i + 1] or out[i + 1] > 0)
        out[i] = reader if ok else 0.0
    for i in range(n):
        if res[i] and (i == 0 or out[i - 1] == 0):
            out[i] = 0.0
    return out


@torch.no_grad()
def int8_emulation(model, calib):
    """BN folded; the int8 layers of calib fake-quantized (input and weights)."""
    model = rt.fold_bn(model)
    convs = convs_in_order(model)
    layers = calib["layers"]
    if len(convs) != len(layers):
        raise RuntimeError(f"{len(convs)} convolutions in torch, {len(layers)} in the calibration")
    for conv, layer in zip(convs, layers):
        if not layer["int8"]:
            continue
        w = conv.weight
        s_w = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        s_w = torch.where(s_w > 0, s_w, torch.ones_like(s_w))
        conv.weight.copy_(fake_quant(w, s_w, -127, 127))
        s = float(np.float32(layer["scale"]))
        conv.register_forward_pre_hook(lambda mod, inp, s=s: (fake_quant(inp[0], s),) + tuple(inp[1:]))
    blocks = [b for stage in list(model.features)[1:-1] for b in stage]
    for b, s in zip(blocks, stream_scales(blocks, {layer["name"]: layer for layer in layers})):
        if s > 0:
            b.register_forward_hook(lambda mod, inp, outp, s=s: fake_quant(outp, s))
    return model


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def save_png(x, path):
    """A normalized [3][H][W] image back to 8-bit RGB."""
    from PIL import Image
    mean = np.array(rt.IMAGENET_MEAN).reshape(3, 1, 1)
    std = np.array(rt.IMAGENET_STD).reshape(3, 1, 1)
    rgb = np.clip((x * std + mean) * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(rgb).save(path)


def photo_tensors(paths, size):
    """Photos resized (shorter side), center-cropped and normalized by PIL."""
    from PIL import Image
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        k = size / min(w, h)
        im = im.resize((max(size, round(w * k)), max(size, round(h * k))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        a = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255
        a = (a - np.array(rt.IMAGENET_MEAN, np.float32)) / np.array(rt.IMAGENET_STD, np.float32)
        out.append(a.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def forward_int8(exe, weights, x, d, calib_path):
    inp, outp = os.path.join(d, "in8.npy"), os.path.join(d, "out8.npy")
    np.save(inp, x)
    rt.run_effnet(exe, ["forward", "--weights", weights, "--input", inp, "--output", outp,
                        "--precision", "int8", "--calibration", calib_path])
    return np.load(outp)


def main():
    exe = rt.effnet_path()
    if len(sys.argv) != 5 or sys.argv[2] not in rt.VARIANTS or sys.argv[4] not in ("smooth", "photos"):
        sys.stderr.write(f"usage: {sys.argv[0]} EFFNET VARIANT SIZE smooth|photos\n")
        return 1
    variant, size, images = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cap = os.environ.get("DNNL_MAX_CPU_ISA", "")
    cpu = rt.cpu_info(exe)
    print(f"effnet cpu: {cpu}")
    print("Random weights cannot measure accuracy: this checks that effnet's int8 computes what its "
          "calibration says, against an ideal emulation of it.")
    out = rt.Outcome()
    with rt.workdir() as d:
        model = rt.make_reference(variant, size, seed=11)
        weights = os.path.join(d, f"{variant}.safetensors")
        rt.save_model(model, weights, "torchvision")

        if images == "smooth":
            cal = rt.smooth_images(12, size, seed=700)
            files = []
            for i, x in enumerate(cal.numpy()):
                files.append(os.path.join(d, f"cal{i:02d}.png"))
                save_png(x, files[-1])
            x = rt.smooth_images(6, size, seed=900).numpy()
        else:
            photos = sorted(dm.sample_photos().values())
            if len(photos) < 6:
                print(f"SKIP: {len(photos)} photos found (python3-matplotlib, python3-skimage)")
                return 77
            # Calibration on all but the last three; those are the test set.
            files, test = photos[:-3], photos[-3:]
            x = photo_tensors(test, size)
        calib_path = os.path.join(d, "cal.json")
        r = rt.run_effnet(exe, ["calibrate", "--weights", weights, "--images"] + files +
                          ["--size", str(size), "-o", calib_path], timeout=1800)
        print(r.stdout.decode().strip())
        calib = json.load(open(calib_path))
        n_int8 = sum(layer["int8"] for layer in calib["layers"])
        print(f"calibration: {n_int8} of {len(calib['layers'])} convolutions in int8, clipping "
              f"{calib['method']}, self-check {calib['selfcheck']}")
        out.check(n_int8 > 0, "some layers in int8")

        ref = rt.torch_logits(rt.fold_bn(model), x)
        emu = rt.torch_logits(int8_emulation(model, calib), x)
        got = out.attempt("effnet forward --precision int8", forward_int8, exe, weights, x, d, calib_path)
        if got is None:
            out.exit()
        std = float(np.std(ref))
        e_emu, e_eng, e_between = rms(emu, ref) / std, rms(got, ref) / std, rms(got, emu) / std
        ok = 0 < e_eng <= BOUND * e_emu
        print(f"{'ok  ' if ok else 'FAIL'} {variant.upper()} @{size} {images} [{cap or 'native'}]: rms error "
              f"against fp32 (in logit std): emulation {e_emu:.4f}, effnet int8 {e_eng:.4f} "
              f"(bound {BOUND * e_emu:.4f}); effnet against the emulation {e_between:.4f}")
        out.check(ok, f"int8 within {BOUND}x of the emulation's error")
        top1 = np.mean(np.argmax(got, 1) == np.argmax(ref, 1))
        print(f"     top-1 agreement with fp32 on {len(x)} images: {top1:.2f} (random weights: not accuracy)")

        # Negative control: coarser scales must break the bound.
        bad = dict(calib)
        bad["layers"] = [dict(layer, scale=layer["scale"] * 8) for layer in calib["layers"]]
        bad_path = os.path.join(d, "coarse.json")
        json.dump(bad, open(bad_path, "w"))
        got_bad = out.attempt("forward with coarse scales", forward_int8, exe, weights, x, d, bad_path)
        if got_bad is not None:
            e_bad = rms(got_bad, ref) / std
            ok = e_bad > BOUND * e_emu
            print(f"{'ok  ' if ok else 'FAIL'} negative control, every scale x8: error {e_bad:.4f} "
                  f"> bound {BOUND * e_emu:.4f}")
            out.check(ok, "negative control")

        # No reference kernel in the int8 plan on this CPU class.
        r = rt.run_effnet(exe, ["bench", "--weights", weights, "--precision", "int8", "--calibration", calib_path,
                                "--size", str(size), "--batch", "1,8", "--runs", "1", "--warmup", "0", "--json"])
        for row in [json.loads(line) for line in r.stdout.decode().splitlines() if line.startswith("{")]:
            refs = [k for k in row["kernels"] if k.startswith("ref")]
            ok = not refs and row["precision"] == "int8" and row["isa"] == cpu["isa"]
            print(f"{'ok  ' if ok else 'FAIL'} bench int8 batch {row['batch']} on {row['isa']}: "
                  f"{row['images_per_s']:.1f} img/s, kernels {row['kernels']}")
            out.check(ok, f"no reference kernel at batch {row['batch']}")
    out.exit()


if __name__ == "__main__":
    sys.exit(main())
