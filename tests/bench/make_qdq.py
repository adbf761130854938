#!/usr/bin/python3
"""Writes ONNX Runtime's int8 peer of effnet's int8 plan: the fp32 ONNX model
of make_model.py with QuantizeLinear/DequantizeLinear (QDQ) pairs around the
convolutions that an effnet calibration runs in int8, so that ONNX Runtime
fuses each into a QLinearConv.

- Inputs: the calibration's scale (symmetric, real = scale * q), as u8 with
  zero point 128 (ONNX Runtime's default activation type; the same 256
  levels as effnet's s8) or, with --act s8, as s8 with zero point 0.
- Weights: s8, symmetric, one scale per output channel (max |w| / 127 of the
  BN-folded weight that the export wrote); --weight-bits 7 is ONNX Runtime's
  reduce_range, for CPUs without VNNI where u8 x s8 pairs can saturate.
- Biases: int32 with scale s_in * s_w[oc], as ONNX Runtime's quantizer does.
- Outputs: ONNX Runtime only fuses a QDQ conv whose output is quantized too
  (effnet keeps the output of an int8 conv in f32). An output that an int8
  conv reads takes that conv's input scale (effnet calibrated that very
  tensor); any other output gets ONNX Runtime's default: u8, asymmetric,
  min/max over the calibration images (the calibration's images in its
  order, the same held-out split), measured in PyTorch on the same weights.

Layer names map to the graph through the export's scope names: effnet's
blocks.I is the I-th torchvision block counted across stages, conv1 its
first conv, dw the depthwise one, project its last 1x1; each mapping is
printed and checked (kind, groups, kernel, weight shape against the
safetensors), and any name that does not map is refused.

--photos also writes the preprocessed images (N x 3 x S x S float32 .npy,
torchvision's resize/crop/normalize of the model's preprocessing) for the
accuracy check of ort_int8_check.js.

Run with Debian's interpreter (/usr/bin/python3: python3-onnx, python3-torch).
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model import build_model, read_safetensors  # noqa: E402

BLOCK_CONV = re.compile(r"^/features/features\.(\d+)/features\.\1\.(\d+)/block/block\.(\d+)/block\.\3\.0/Conv$")
PLAIN_CONV = re.compile(r"^/features/features\.(\d+)/features\.\1\.0/Conv$")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def die(msg):
    sys.exit(f"make_qdq: {msg}")


def conv_map(graph):
    """{effnet layer name: (conv node, torchvision module prefix)} from the
    export's scope names."""
    blocks = {}
    plain = {}
    for n in graph.node:
        if n.op_type != "Conv":
            continue
        m = BLOCK_CONV.match(n.name)
        if m:
            s, b, k = (int(g) for g in m.groups())
            blocks.setdefault((s, b), []).append((k, n))
            continue
        m = PLAIN_CONV.match(n.name)
        if m:
            plain[int(m.group(1))] = n
    if not plain or not blocks:
        die("no torchvision scope names in the ONNX graph (export from make_model.py)")
    out = {}
    stem, head = min(plain), max(plain)
    out["stem"] = (plain[stem], f"features.{stem}.0")
    out["head"] = (plain[head], f"features.{head}.0")
    for i, (s, b) in enumerate(sorted(blocks)):
        convs = sorted(blocks[(s, b)], key=lambda t: t[0])
        kinds = ["conv1"] + (["dw", "project"] if len(convs) == 3 else ["project"] if len(convs) == 2 else [])
        if len(kinds) != len(convs):
            die(f"block features.{s}.{b}: {len(convs)} convs, expected 1 to 3")
        for kind, (k, n) in zip(kinds, convs):
            out[f"blocks.{i}.{kind}"] = (n, f"features.{s}.{b}.block.{k}.0")
    return out


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx
            return onnx.helper.get_attribute_value(a)
    return default


def check_mapping(mapping, layers, inits, tensors):
    """Refuses a layer the graph lacks, a conv the calibration lacks, or a
    conv whose kind or weight does not fit its name."""
    names = [layer["name"] for layer in layers]
    missing = [x for x in names if x not in mapping]
    extra = [x for x in mapping if x not in set(names)]
    if missing or extra:
        die(f"calibration and graph disagree: not in the graph {missing[:8]}, not in the calibration {extra[:8]}")
    for layer in layers:
        name = layer["name"]
        node, prefix = mapping[name]
        w = inits.get(node.input[1])
        if w is None:
            die(f"{name}: {node.name}: weight {node.input[1]} is not an initializer")
        tw = tensors.get(prefix + ".weight")
        if tw is None or list(tw.shape) != list(w.dims):
            die(f"{name}: {node.name}: weight {list(w.dims)} against {prefix}.weight "
                f"{None if tw is None else list(tw.shape)}")
        group = attr(node, "group", 1)
        dw = group > 1 and group == w.dims[0]
        if name.endswith(".dw") != dw:
            die(f"{name}: {node.name}: group {group}, depthwise {dw}")
        if name.endswith(".project") and list(w.dims[2:]) != [1, 1]:
            die(f"{name}: {node.name}: kernel {list(w.dims[2:])}, a projection is 1x1")
        if layer["int8"] and (dw or name == "stem"):
            die(f"{name}: marked int8, but effnet runs it in fp32")
        print(f"  {name:<20} {'int8' if layer['int8'] else 'fp32'}  {prefix:<26} {node.name}  "
              f"w {list(w.dims)} g {group}", file=sys.stderr)


def preprocess(paths, size):
    """torchvision's transforms of the model's preprocessing (bilinear resize
    of the short side to size, center crop, ImageNet normalization)."""
    from PIL import Image
    from torchvision import transforms as T
    t = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(size),
                   T.ToTensor(), T.Normalize(*IMAGENET)])
    return np.stack([t(Image.open(p).convert("RGB")).numpy() for p in paths]).astype(np.float32)


def output_ranges(safetensors, variant, prefixes, images):
    """{module prefix: (min, max)} of the BN output after each conv (the
    folded conv's output in the ONNX graph), over the images."""
    import torch
    model = build_model(variant)
    sd = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(safetensors).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        die(f"weight names differ from torchvision: missing {missing[:5]} unexpected {unexpected[:5]}")
    model.eval()
    mods = dict(model.named_modules())
    ranges = {}

    def hook(prefix):
        def f(_m, _i, y):
            lo, hi = float(y.min()), float(y.max())
            a, b = ranges.get(prefix, (lo, hi))
            ranges[prefix] = (min(a, lo), max(b, hi))
        return f
    for p in prefixes:
        bn = p[:-1] + "1"  # features...X.0 is the conv, features...X.1 its BatchNorm
        if not isinstance(mods.get(bn), torch.nn.BatchNorm2d):
            die(f"{bn} is not the BatchNorm after {p}")
        mods[bn].register_forward_hook(hook(p))
    with torch.inference_mode():
        for i in range(0, len(images), 4):
            model(torch.from_numpy(images[i:i + 4]))
    return ranges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help="fp32 model from make_model.py")
    ap.add_argument("--safetensors", required=True, help="the same weights, for the checks and the output ranges")
    ap.add_argument("--calibration", required=True, help="effnet calibrate's JSON for these weights")
    ap.add_argument("--images", nargs="+", required=True, help="the images given to effnet calibrate, same order")
    ap.add_argument("--held-out", type=int, default=0, help="as effnet calibrate (default: a fifth, at least 1)")
    ap.add_argument("--act", choices=("u8", "s8"), default="u8")
    ap.add_argument("--weight-bits", type=int, choices=(7, 8), default=8)
    ap.add_argument("--photos", help="also write the preprocessed images here (.npy)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    import onnx
    from onnx import helper, numpy_helper

    cal = json.load(open(args.calibration, encoding="utf-8"))
    if cal.get("format") != "effnet-calibration" or cal.get("version") != 1:
        die(f"{args.calibration}: not an effnet calibration (version 1)")
    variant = cal["variant"].removeprefix("efficientnetv2-")
    model = onnx.load(args.onnx)
    g = model.graph
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        die(f"opset {opset}: per-channel DequantizeLinear needs 13")
    inits = {t.name: t for t in g.initializer}
    tensors = read_safetensors(args.safetensors)
    mapping = conv_map(g)
    print(f"make_qdq: {len(cal['layers'])} calibration layers -> ONNX convs:", file=sys.stderr)
    check_mapping(mapping, cal["layers"], inits, tensors)
    int8 = {x["name"]: x["scale"] for x in cal["layers"] if x["int8"]}
    qnodes = {mapping[x][0].name: (x, s) for x, s in int8.items()}

    n = len(args.images)
    held = args.held_out if args.held_out > 0 else max(n // 5, 1)
    if n - held < 1:
        die(f"{n} images, {held} held out: nothing to calibrate on")
    images = preprocess(args.images, cal["size"])
    if args.photos:
        np.save(args.photos, images)

    consumers = {}
    for node in g.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)

    # Input scale per tensor an int8 conv reads.
    in_scale = {}
    for node in g.node:
        if node.name in qnodes:
            x, s = node.input[0], qnodes[node.name][1]
            if in_scale.get(x, s) != s:
                die(f"{x} feeds two int8 convs with different scales")
            in_scale[x] = s
    out_only = {}   # conv output -> module prefix, for those no int8 conv reads
    for node in g.node:
        if node.name in qnodes and node.output[0] not in in_scale:
            out_only[node.output[0]] = mapping[qnodes[node.name][0]][1]
    ranges = output_ranges(args.safetensors, variant, sorted(set(out_only.values())), images[:n - held])

    act_np = np.uint8 if args.act == "u8" else np.int8
    qmax_w = 127 if args.weight_bits == 8 else 63
    new_inits = []
    new_nodes = {}  # id of a node -> nodes to put before it
    dq_for = {}     # (tensor, consumer node name) -> the DQ output it reads

    def qdq(x, scale, zp, before, users):
        """A Q on tensor x before node `before`, and DQs for its users: one of
        its own for each int8 conv (ONNX Runtime fuses a QDQ conv only when
        no other node shares its DQ), one shared by the rest (so that SiLU's
        Sigmoid and Mul still read one tensor and fuse)."""
        base = x.replace("/", "_").strip("_") or "t"
        new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), base + "_scale"))
        new_inits.append(numpy_helper.from_array(np.array(zp, act_np), base + "_zp"))
        nodes = [helper.make_node("QuantizeLinear", [x, base + "_scale", base + "_zp"], [base + "_q"],
                                  name=base + "_Q")]
        for k, u in enumerate(users):
            name = f"{base}_dq{k}" if u.name in qnodes else base + "_dq"
            if name not in {n.output[0] for n in nodes}:
                nodes.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"],
                                              [name], name="DQ_" + name))
            dq_for[(x, u.name)] = name
        new_nodes.setdefault(id(before), []).extend(nodes)

    zp_sym = 128 if args.act == "u8" else 0
    for node in g.node:
        if node.name not in qnodes:
            continue
        s_in = qnodes[node.name][1]
        x = node.input[0]
        # The pair on an input goes right before the conv and feeds only
        # this conv: a residual add that reads the same tensor keeps it in
        # f32, as in effnet.
        if (x, node.name) not in dq_for:
            qdq(x, s_in, zp_sym, node, [node])
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        s_w = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / qmax_w
        s_w[s_w == 0] = 1.0
        wq = np.clip(np.round(w / s_w[:, None, None, None]), -qmax_w, qmax_w).astype(np.int8)
        base = node.name.replace("/", "_").strip("_")
        new_inits += [numpy_helper.from_array(wq, base + "_wq"),
                      numpy_helper.from_array(s_w.astype(np.float32), base + "_ws"),
                      numpy_helper.from_array(np.zeros(w.shape[0], np.int8), base + "_wzp")]
        nodes = [helper.make_node("DequantizeLinear", [base + "_wq", base + "_ws", base + "_wzp"], [base + "_wdq"],
                                  name=base + "_WDQ", axis=0)]
        ins = [dq_for[(x, node.name)], base + "_wdq"]
        if len(node.input) > 2 and node.input[2]:
            b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            s_b = np.float32(s_in) * s_w.astype(np.float32)
            bq = np.clip(np.round(b / s_b), -2**31, 2**31 - 1).astype(np.int32)
            new_inits += [numpy_helper.from_array(bq, base + "_bq"),
                          numpy_helper.from_array(s_b.astype(np.float32), base + "_bs"),
                          numpy_helper.from_array(np.zeros(w.shape[0], np.int32), base + "_bzp")]
            nodes.append(helper.make_node("DequantizeLinear", [base + "_bq", base + "_bs", base + "_bzp"],
                                          [base + "_bdq"], name=base + "_BDQ", axis=0))
            ins.append(base + "_bdq")
        new_nodes.setdefault(id(node), []).extend(nodes)
        node.input[:] = ins
        y = node.output[0]
        if y in out_only:
            lo, hi = ranges[out_only[y]]
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            if args.act == "u8":
                scale = (hi - lo) / 255 or 1.0
                zp = int(np.clip(round(-lo / scale), 0, 255))
            else:
                scale, zp = max(-lo, hi) / 127 or 1.0, 0
        else:
            scale, zp = in_scale[y], zp_sym
        # The graph is topologically sorted: the Q goes before the first
        # consumer of the output.
        users = consumers.get(y, [])
        qdq(y, scale, zp, users[0], users)

    order = []
    for node in g.node:
        order.extend(new_nodes.get(id(node), []))
        order.append(node)
        for i, x in enumerate(node.input):
            if (x, node.name) in dq_for:
                node.input[i] = dq_for[(x, node.name)]
    del g.node[:]
    g.node.extend(order)
    used = {x for n in g.node for x in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    onnx.checker.check_model(model)
    tmp = args.output + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, args.output)
    print(f"make_qdq: {len(qnodes)} convs with QDQ ({args.act} activations, {args.weight_bits}-bit per-channel "
          f"weights), {len(out_only)} conv outputs at min/max over {n - held} images; "
          f"{n} images -> {args.photos or '(not written)'}", file=sys.stderr)


if __name__ == "__main__":
    main()
