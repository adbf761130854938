#!/usr/bin/python3
"""Where the error of bf16 inference comes from, on the calibrated random
networks of the equivalence suite.

Usage: tests/bench/bf16-accuracy.py [--effnet PATH] [--nets s,b0] [--seeds 4]
                                    [--images 16] [--out FILE]

For each network it prints, as max and rms of |logits - fp32 logits| over
the std of the fp32 logits:
  - effnet --precision bf16, and on how many samples with a decisive fp32
    top-1 (margin over 0.1 x std) its top-1 differs;
  - an ideal bf16 engine emulated in torch (BN folded, weights and every
    conv/linear input rounded to bf16 except the stem's, fp32
    accumulation), then the same with only the weights or only the
    activations rounded; the latter is the floor of any engine that keeps
    activations in bf16 between layers; and the same engine with a bf16
    stem;
  - torch's own bf16 (`model.bfloat16()`);
  - the fp32 network itself, fed the input rounded to bf16, and fed the
    input plus uniform noise of half and a quarter of one 8-bit grey level:
    how sensitive the network is to perturbations no image can avoid.
The networks are those of tests/equivalence/test_bf16.py (V2-S with
torchvision names at 384, B0 with timm names and TF SAME padding at 224).
Nothing here passes or fails: the numbers document a bar.
"""
import argparse
import copy
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "equivalence"))
import reftools as rt  # noqa: E402  (exits 77 without torch)

np, torch = rt.np, rt.torch

NETS = {  # name: (variant, size, padding, scheme, image seed)
    "s": ("s", 384, "symmetric", "torchvision", 401),
    "b0": ("b0", 224, "same", "timm", 402),
}


def ratios(ref, got):
    """'max (rms)' of |got - ref| over std(ref)."""
    d = np.abs(np.asarray(got, dtype=np.float64) - ref)
    std = float(ref.std())
    return f"{float(d.max()) / std:.3f} ({float(np.sqrt((d ** 2).mean())) / std:.4f})"


def top1_flips(ref, got, margin=0.1):
    """How many samples whose fp32 top-1 margin exceeds margin x std(ref)
    get another top-1."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > margin * float(ref.std())
    flips = decisive & (np.argmax(ref, 1) != np.argmax(got, 1))
    return f"{int(flips.sum())} of {int(decisive.sum())}"


def grey_noise(x, levels, seed):
    """x plus uniform noise of +-levels grey levels of an 8-bit image, in the
    normalized units of the input."""
    g = torch.Generator().manual_seed(seed)
    std = torch.tensor(rt.IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.from_numpy(np.asarray(x))
    return (x + (torch.rand(x.shape, generator=g) - 0.5) * 2 * levels / 255 / std).numpy()


def rows_for(exe, workdir, net, seed, n_images):
    variant, size, padding, scheme, img_seed = NETS[net]
    model = rt.make_reference(variant, size, seed=seed, padding=padding)
    x = rt.smooth_images(n_images, size, seed=img_seed).numpy()
    ref = rt.torch_logits(model, x).astype(np.float64)
    rows = []
    if exe:
        path = os.path.join(workdir, f"{net}-{seed}.safetensors")
        rt.save_model(model, path, scheme)
        got = rt.effnet_forward(exe, path, x, workdir, precision="bf16")
        rows.append(("effnet bf16", ratios(ref, got)))
        rows.append(("effnet bf16: top-1 changed where the fp32 margin > 0.1 x std", top1_flips(ref, got)))
        os.unlink(path)
    for label, w, a, stem in (("ideal bf16 engine, f32 stem (torch emulation)", True, True, True),
                              ("  the same, only weights rounded", True, False, True),
                              ("  the same, only activations rounded", False, True, True),
                              ("ideal bf16 engine, bf16 stem", True, True, False)):
        rows.append((label, ratios(ref, rt.torch_logits(rt.bf16_emulation(model, w, a, stem), x))))
    with torch.no_grad():
        native = copy.deepcopy(model).bfloat16()(torch.from_numpy(x).bfloat16()).float().numpy()
    rows.append(("torch model.bfloat16()", ratios(ref, native)))
    xb = torch.from_numpy(x).bfloat16().float().numpy()
    rows.append(("fp32 net, input rounded to bf16", ratios(ref, rt.torch_logits(model, xb))))
    for levels in (0.5, 0.25):
        rows.append((f"fp32 net, input +-{levels:g} grey level noise",
                     ratios(ref, rt.torch_logits(model, grey_noise(x, levels, seed)))))
    title = f"{variant.upper()} {scheme} {padding} @{size} seed {seed}"
    return title, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--effnet", help="effnet binary (default: build/src/cli/effnet); 'none' skips it")
    ap.add_argument("--nets", default="s,b0", help="comma-separated, from: " + ",".join(NETS))
    ap.add_argument("--seeds", default="4", help="weight seeds, comma-separated")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    exe = args.effnet or os.path.join(ROOT, "build", "src", "cli", "effnet")
    if exe == "none":
        exe = None
    elif not os.access(exe, os.X_OK):
        sys.exit(f"{exe}: not executable; build first (meson setup build && ninja -C build) or pass --effnet")
    columns, table = [], {}
    with rt.workdir() as d:
        for net in args.nets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                title, rows = rows_for(exe, d, net, seed, args.images)
                columns.append(title)
                print(f"{title}: done", file=sys.stderr, flush=True)
                for label, cell in rows:
                    table.setdefault(label, []).append(cell)
    lines = ["max / std (rms / std) of the logits' difference from fp32", "",
             "| source of difference | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table.items()]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
