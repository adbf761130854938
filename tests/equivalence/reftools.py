#!/usr/bin/python3
"""Reference side of the equivalence tests: torchvision EfficientNetV2 models
with calibrated random weights, the timm weight-name scheme, TF 'SAME'
padding done with explicit F.pad, a safetensors writer/reader, and the
helpers every test uses to run `effnet forward` and compare logits.

Importing this module exits with status 77 (meson: skipped) when numpy,
torch or torchvision cannot be imported; run it with /usr/bin/python3 so that
Debian's python3-torchvision is visible.

`/usr/bin/python3 reftools.py` runs a self-check of the reference side alone
(no effnet needed): parameter counts, the variant tables against torchvision,
the timm renaming, TF-SAME padding and the safetensors round trip.
"""

import copy
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

SKIP = 77

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    import torchvision
    from torchvision.models import efficientnet as tv_eff
except ImportError as exc:  # pragma: no cover - depends on the host
    sys.stderr.write(f"SKIP: {exc}; the equivalence suite needs Debian's "
                     "python3-numpy and python3-torchvision (/usr/bin/python3)\n")
    sys.exit(SKIP)

torch.set_num_threads(int(os.environ.get("EQUIV_TORCH_THREADS", "2")))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------
# Variant tables (docs/model.md). A stage is
# (kind, expand, stride, out_channels, repeats); every kernel is 3x3.

FUSED, MBCONV = "fused", "mbconv"

V2_TABLES = {
    "s": dict(stem=24, head=1280, stages=[
        (FUSED, 1, 1, 24, 2), (FUSED, 4, 2, 48, 4), (FUSED, 4, 2, 64, 4),
        (MBCONV, 4, 2, 128, 6), (MBCONV, 6, 1, 160, 9), (MBCONV, 6, 2, 256, 15)]),
    "m": dict(stem=24, head=1280, stages=[
        (FUSED, 1, 1, 24, 3), (FUSED, 4, 2, 48, 5), (FUSED, 4, 2, 80, 5),
        (MBCONV, 4, 2, 160, 7), (MBCONV, 6, 1, 176, 14), (MBCONV, 6, 2, 304, 18),
        (MBCONV, 6, 1, 512, 5)]),
    "l": dict(stem=32, head=1280, stages=[
        (FUSED, 1, 1, 32, 4), (FUSED, 4, 2, 64, 7), (FUSED, 4, 2, 96, 7),
        (MBCONV, 4, 2, 192, 10), (MBCONV, 6, 1, 224, 19), (MBCONV, 6, 2, 384, 25),
        (MBCONV, 6, 1, 640, 7)]),
    "xl": dict(stem=32, head=1280, stages=[
        (FUSED, 1, 1, 32, 4), (FUSED, 4, 2, 64, 8), (FUSED, 4, 2, 96, 8),
        (MBCONV, 4, 2, 192, 16), (MBCONV, 6, 1, 256, 24), (MBCONV, 6, 2, 512, 32),
        (MBCONV, 6, 1, 640, 8)]),
}

B_BASE = dict(stem=32, head=1280, stages=[
    (FUSED, 1, 1, 16, 1), (FUSED, 4, 2, 32, 2), (FUSED, 4, 2, 48, 2),
    (MBCONV, 4, 2, 96, 3), (MBCONV, 6, 1, 112, 5), (MBCONV, 6, 2, 192, 8)])
B_SCALES = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4)}

# Parameter counts with 1000 classes, from docs/model.md.
PARAM_COUNTS = {"s": 21458488, "m": 54139356, "l": 118515272, "xl": 208119808,
                "b0": 7139704, "b1": 8141052, "b2": 10096086, "b3": 14358406}

VARIANTS = ("s", "m", "l", "xl", "b0", "b1", "b2", "b3")


def round_filters(f, width):
    """timm's round_channels with round_limit 0: no 10% rule."""
    return max(8, int(f * width + 4) // 8 * 8)


def round_repeats(r, depth):
    return int(math.ceil(depth * r))


def variant_table(variant):
    """The stage table of a variant with B0..B3 scaling applied."""
    if variant in V2_TABLES:
        return V2_TABLES[variant]
    width, depth = B_SCALES[variant]
    return dict(stem=round_filters(B_BASE["stem"], width),
                head=round_filters(B_BASE["head"], width),
                stages=[(k, e, s, round_filters(c, width), round_repeats(n, depth))
                        for (k, e, s, c, n) in B_BASE["stages"]])


def build_torch_model(variant, num_classes=1000, bn_eps=1e-3):
    """An EfficientNetV2 on torchvision's EfficientNet class.

    S, M and L come from torchvision's own constructors (the reference nobody
    here wrote); XL and B0..B3 are built on the same class from the tables
    above. Weights are torchvision's default initialization."""
    norm = lambda c: nn.BatchNorm2d(c, eps=bn_eps)  # noqa: E731
    if variant in ("s", "m", "l") and bn_eps == 1e-3:
        ctor = getattr(torchvision.models, f"efficientnet_v2_{variant}")
        return ctor(weights=None, num_classes=num_classes)
    return build_table_model(variant, num_classes, norm)


def build_table_model(variant, num_classes=1000, norm_layer=None):
    table = variant_table(variant)
    setting = []
    cin = table["stem"]
    for kind, e, s, cout, n in table["stages"]:
        if kind == FUSED:
            setting.append(tv_eff.FusedMBConvConfig(e, 3, s, cin, cout, n))
        else:
            # Channels are already multiples of 8, so torchvision's
            # _make_divisible leaves them alone with width_mult 1.0.
            setting.append(tv_eff.MBConvConfig(e, 3, s, cin, cout, n, 1.0, 1.0))
        cin = cout
    if norm_layer is None:
        norm_layer = lambda c: nn.BatchNorm2d(c, eps=1e-3)  # noqa: E731
    return tv_eff.EfficientNet(setting, dropout=0.2, num_classes=num_classes,
                               norm_layer=norm_layer, last_channel=table["head"])


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------
# Inputs

def smooth_images(n, height, width=None, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """n smooth random RGB images in [0, 1], normalized with mean/std.

    Each is a sum of bicubically upsampled noise fields from 2x2 to 112x112
    cells with falling amplitude, scaled to unit variance (so that no image
    is an outlier in overall contrast), with a mild random contrast and
    brightness, squashed by a sigmoid. The finer fields matter: with only
    the coarsest ones, bf16 rounding errors of a random network grow to a
    larger share of the spread of its logits; and the contrast range stays
    narrow because a random network's response grows faster than the
    contrast, so high-contrast images would dominate the logits' std.
    Returns float32 NCHW."""
    width = height if width is None else width
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 3, height, width)
    for cells, amp in ((2, 1.0), (4, 1.0), (8, 0.8), (16, 0.7), (32, 0.6), (64, 0.5), (112, 0.3)):
        noise = torch.randn(n, 3, cells, cells, generator=g)
        img += amp * F.interpolate(noise, size=(height, width), mode="bicubic",
                                   align_corners=False)
    img /= img.std(dim=(1, 2, 3), keepdim=True)
    contrast = 1.4 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=g)
    img = torch.sigmoid(img * contrast + brightness)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return ((img - m) / s).float().contiguous()


# --------------------------------------------------------------------------
# Random weights that do not collapse

def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def randomize(model, seed):
    """Random BN affine parameters, SE weights and biases on top of
    torchvision's initialization (which leaves BN at identity and biases at
    zero).

    The scales are chosen so that the network behaves like a trained one in
    the ways that matter here: SE weights get a LeCun-like scale so that
    the gates vary around 0.5 instead of saturating, and the BN that closes
    each residual branch gets a small scale (0.1-0.3) so that the residual
    stream does not grow block after block. Without both, a few inputs
    blow up through the depth and dominate every logit, and rounding errors
    grow faster than the signal."""
    g = torch.Generator().manual_seed(seed)
    closing = set()
    for m in model.modules():
        if isinstance(m, (tv_eff.MBConv, tv_eff.FusedMBConv)) and m.use_res_connect:
            last = m.block[-1]
            closing.add(id(last[1] if isinstance(last, nn.Sequential) else last))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            lo, hi = (0.1, 0.3) if id(m) in closing else (0.8, 1.2)
            m.weight.copy_(lo + (hi - lo) * torch.rand(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, torchvision.ops.SqueezeExcitation):
            for fc, gain in ((m.fc1, 0.5), (m.fc2, 1.0)):
                fan_in = fc.weight[0].numel()
                fc.weight.copy_(gain / math.sqrt(fan_in) *
                                torch.randn(fc.weight.shape, generator=g))
                fc.bias.copy_(0.1 * torch.randn(fc.bias.shape, generator=g))


@torch.no_grad()
def calibrate(model, size, seed, passes=2, batch=4):
    """Sets every BN's running statistics to the mean over `passes` batches of
    smooth random images (train-mode BN with momentum None; dropout and
    stochastic depth stay in eval), then puts the model in eval mode."""
    model.eval()
    for bn in bn_modules(model):
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for i in range(passes):
        model(smooth_images(batch, size, seed=seed * 1000 + i))
    model.eval()


def pooled_features(model, x):
    f = model.features(x)
    return torch.flatten(model.avgpool(f), 1)


@torch.no_grad()
def calibrate_classifier(model, size, seed, target_std=4.0, batch=8):
    """Random classifier centered on the median pooled feature of a batch of
    smooth images and scaled so that a typical image's logits have std
    `target_std`: the logits then come from what differs between inputs,
    not from a constant per-class offset. Medians, because a few inputs
    excite a random network far more than the rest."""
    fc = model.classifier[1]
    g = torch.Generator().manual_seed(seed)
    feats = pooled_features(model, smooth_images(batch, size, seed=seed * 1000 + 999))
    mu = feats.median(0).values
    w = torch.randn(fc.weight.shape, generator=g)
    per_sample = (feats - mu).matmul(w.t()).std(1)
    w *= target_std / float(per_sample.median())
    fc.weight.copy_(w)
    fc.bias.copy_(-w.matmul(mu) + 0.1 * torch.randn(fc.bias.shape, generator=g))


def make_reference(variant, size, seed=1, num_classes=1000, padding="symmetric",
                   bn_eps=1e-3, calib_size=None):
    """A calibrated random model ready for comparison: torchvision structure,
    symmetric (torchvision) or TF 'SAME' padding. Calibration runs with the
    padding the model will be evaluated with."""
    torch.manual_seed(seed)
    model = build_torch_model(variant, num_classes, bn_eps)
    randomize(model, seed)
    if padding == "same":
        to_tf_same(model)
    elif padding != "symmetric":
        raise ValueError(padding)
    calib = calib_size or size
    calibrate(model, calib, seed)
    calibrate_classifier(model, calib, seed)
    return model.eval()


# --------------------------------------------------------------------------
# TF 'SAME' padding

def tf_same_pads(size, k, s, d=1):
    """(before, after) for one spatial dim, as TensorFlow computes them."""
    k = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Conv2dTfSame(nn.Conv2d):
    """Conv2d whose padding is recomputed from each input's size the way
    TensorFlow's 'SAME' does it, applied with an explicit F.pad."""

    def forward(self, x):
        ph = tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def to_tf_same(model):
    """Turns every Conv2d with a kernel larger than 1 into Conv2dTfSame in
    place (same parameters, same state_dict keys). Returns the model."""
    n = 0
    for m in model.modules():
        if type(m) is nn.Conv2d and max(m.kernel_size) > 1:
            m.__class__ = Conv2dTfSame
            m.padding = (0, 0)
            n += 1
    if n == 0:
        raise RuntimeError("no convolution with a kernel > 1 found")
    return model


def to_symmetric(model):
    """A copy of model with torchvision's symmetric padding restored on every
    Conv2dTfSame: the same weights, the other padding rule."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if type(m) is Conv2dTfSame:
            m.__class__ = nn.Conv2d
            m.padding = tuple((k - 1) // 2 * d for k, d in zip(m.kernel_size, m.dilation))
    return model


def same_differs(height, width=None, stride2_convs=5):
    """Whether TF 'SAME' and symmetric padding differ for a 3x3 network with
    `stride2_convs` stride-2 convolutions at this input size: they do when
    any of them sees an even input."""
    for n in (height, height if width is None else width):
        for _ in range(stride2_convs):
            if n % 2 == 0:
                return True
            n = -(-n // 2)
    return False


# --------------------------------------------------------------------------
# Emulations of what an engine does to the same network

@torch.no_grad()
def fold_bn(model):
    """A copy of model with every conv+BN pair folded into one conv with a
    bias (w * g / sqrt(var + eps), b - mean * g / sqrt(var + eps)), the way
    an inference engine loads it."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, torchvision.ops.misc.Conv2dNormActivation):
            conv, bn = m[0], m[1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            conv.bias = nn.Parameter(bias if conv.bias is None else bias + conv.bias * scale)
            m[1] = nn.Identity()
    return model


def _to_bf16(t):
    return t.to(torch.bfloat16).float()


@torch.no_grad()
def bf16_emulation(model, weights=True, activations=True, stem_fp32=True):
    """A copy of model that computes like a bf16 engine: BN folded, conv and
    linear weights rounded to bf16 (biases kept in fp32), every conv and
    linear input rounded to bf16, fp32 accumulation. With stem_fp32 the stem
    conv keeps fp32 weights and input, as effnet's bf16 plans do. Its error
    against the fp32 model is what a faithful bf16 implementation should be
    close to. weights=False or activations=False leaves that side in fp32,
    to tell the two sources of error apart."""
    model = fold_bn(model)
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or (stem_fp32 and name.startswith("features.0.")):
            continue
        if weights:
            m.weight.copy_(_to_bf16(m.weight))
        if activations:
            m.register_forward_pre_hook(lambda mod, inp: (_to_bf16(inp[0]),) + tuple(inp[1:]))
    return model


# --------------------------------------------------------------------------
# Weight names

_TIMM_BLOCK_NAMES = {
    "fused1": {"block.0.0": "conv", "block.0.1": "bn1"},
    "fused": {"block.0.0": "conv_exp", "block.0.1": "bn1",
              "block.1.0": "conv_pwl", "block.1.1": "bn2"},
    "mbconv": {"block.0.0": "conv_pw", "block.0.1": "bn1",
               "block.1.0": "conv_dw", "block.1.1": "bn2",
               "block.2.fc1": "se.conv_reduce", "block.2.fc2": "se.conv_expand",
               "block.3.0": "conv_pwl", "block.3.1": "bn3"},
}


def torchvision_to_timm_names(keys):
    """Maps every torchvision EfficientNetV2 state_dict key (except
    num_batches_tracked) to its timm name. Raises KeyError on a key it does
    not know, so that an incomplete mapping cannot pass silently."""
    keys = [k for k in keys if not k.endswith("num_batches_tracked")]
    feat = [int(k.split(".")[1]) for k in keys if k.startswith("features.")]
    head = max(feat)
    kinds = {}
    for k in keys:
        p = k.split(".")
        if p[0] == "features" and 0 < int(p[1]) < head:
            sb = (int(p[1]), int(p[2]))
            kind = kinds.get(sb, "fused1")
            if p[4:6] == ["2", "fc1"]:
                kind = "mbconv"
            elif p[4:6] == ["1", "0"] and kind != "mbconv":
                kind = "fused"
            kinds[sb] = kind
    out = {}
    for k in keys:
        p = k.split(".")
        name = None
        if p[0] == "classifier" and p[1] == "1":
            name = "classifier." + p[2]
        elif p[0] == "features" and p[1] == "0":
            name = {"0": "conv_stem", "1": "bn1"}[p[2]] + "." + p[3]
        elif p[0] == "features" and int(p[1]) == head:
            name = {"0": "conv_head", "1": "bn2"}[p[2]] + "." + p[3]
        elif p[0] == "features" and p[3] == "block":
            s, b = int(p[1]), int(p[2])
            part = _TIMM_BLOCK_NAMES[kinds[(s, b)]][".".join(p[3:6])]
            name = f"blocks.{s - 1}.{b}.{part}.{p[6]}"
        if name is None:
            raise KeyError(f"no timm name for torchvision key {k!r}")
        out[k] = name
    if len(set(out.values())) != len(out):
        raise KeyError("timm renaming is not one-to-one")
    return out


def state_dict_arrays(model, scheme="torchvision"):
    """name -> float32 numpy array for every tensor effnet needs (skips
    num_batches_tracked), under the torchvision or timm scheme."""
    sd = {k: v for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked")}
    if scheme == "timm":
        names = torchvision_to_timm_names(sd.keys())
    elif scheme == "torchvision":
        names = {k: k for k in sd}
    else:
        raise ValueError(scheme)
    return {names[k]: v.detach().float().contiguous().numpy() for k, v in sd.items()}


def load_arrays_into(model, arrays):
    """Loads name -> array (either scheme) into a torchvision-structured
    model, strictly: every tensor of the model must be present and no extra
    tensor may remain. Raises on any mismatch."""
    sd = model.state_dict()
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    if all(k in arrays for k in keys):
        names = {k: k for k in keys}
    else:
        names = torchvision_to_timm_names(keys)
    extra = set(arrays) - set(names.values())
    missing = [names[k] for k in keys if names[k] not in arrays]
    if extra or missing:
        raise KeyError(f"missing {sorted(missing)[:8]} extra {sorted(extra)[:8]}")
    new = {}
    for k in keys:
        a = arrays[names[k]]
        if tuple(a.shape) != tuple(sd[k].shape):
            raise ValueError(f"{names[k]}: shape {a.shape} != {tuple(sd[k].shape)}")
        new[k] = torch.from_numpy(np.array(a, dtype=np.float32))
    model.load_state_dict(new, strict=False)
    return model


# --------------------------------------------------------------------------
# safetensors (python3-safetensors is not packaged in Debian 12)

_ST_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
              "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}


def write_safetensors(path, tensors, metadata=None):
    """Writes name -> numpy array as float32 safetensors, in insertion order:
    8-byte little-endian header length, JSON header padded with spaces to a
    multiple of 8, then the raw little-endian data."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def read_safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def read_safetensors(path):
    """name -> float32 numpy array (F32, F16 and BF16 are converted)."""
    header, base = read_safetensors_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            if info["dtype"] == "BF16":
                u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                a = u.view(np.float32)
            else:
                a = np.frombuffer(raw, dtype=_ST_DTYPES[info["dtype"]]).astype(np.float32)
            out[name] = a.reshape(info["shape"])
    return out


def save_model(model, path, scheme="torchvision"):
    write_safetensors(path, state_dict_arrays(model, scheme))


# --------------------------------------------------------------------------
# Running effnet

def effnet_path():
    """The effnet binary from argv[1] (meson passes it) or $EFFNET. Under a
    DNNL_MAX_CPU_ISA cap, exits 77 when this CPU cannot reach the cap (its
    effective ISA is lower), since the test would only repeat a lower one."""
    exe = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EFFNET", "")
    if not exe or not os.access(exe, os.X_OK):
        sys.stderr.write(f"usage: {sys.argv[0]} PATH-TO-effnet (got {exe!r})\n")
        sys.exit(1)
    cap = os.environ.get("DNNL_MAX_CPU_ISA")
    if cap:
        isa = cpu_info(exe)["isa"]
        if isa != cap.lower():
            print(f"SKIP: this CPU cannot reach DNNL_MAX_CPU_ISA={cap} (oneDNN runs {isa} under it)")
            sys.exit(SKIP)
        print(f"DNNL_MAX_CPU_ISA={cap}: oneDNN runs {isa}")
    return exe


def cpu_info(exe):
    """`effnet cpu` as a dict: isa, bf16, layouts, auto_precision."""
    return json.loads(subprocess.run([exe, "cpu"], check=True, capture_output=True, text=True).stdout)


def require_bf16(exe):
    """Exits 77 unless this CPU (as capped) runs bf16 natively."""
    info = cpu_info(exe)
    if not info["bf16"]:
        print(f"SKIP: bf16 needs AVX512_BF16 or AMX; oneDNN runs {info['isa']} here")
        sys.exit(SKIP)


class EffnetError(RuntimeError):
    pass


def run_effnet(exe, args, timeout=900):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    cmd = [exe] + [str(a) for a in args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=timeout)
    if r.returncode != 0:
        raise EffnetError(f"{' '.join(cmd)}: exit {r.returncode}\n"
                          f"stdout: {r.stdout.decode(errors='replace')[-2000:]}\n"
                          f"stderr: {r.stderr.decode(errors='replace')[-2000:]}")
    return r


def effnet_forward(exe, weights, x, workdir, precision=None, padding=None, bn_eps=None):
    """Runs `effnet forward` on the float32 NCHW batch x; returns logits."""
    inp = os.path.join(workdir, "input.npy")
    out = os.path.join(workdir, "output.npy")
    if os.path.exists(out):
        os.unlink(out)
    np.save(inp, np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
    args = ["forward", "--weights", weights, "--input", inp, "--output", out]
    if precision:
        args += ["--precision", precision]
    if padding:
        args += ["--padding", padding]
    if bn_eps is not None:
        args += ["--bn-eps", repr(float(bn_eps))]
    run_effnet(exe, args)
    y = np.load(out)
    if y.dtype != np.float32 or y.ndim != 2 or y.shape[0] != np.shape(x)[0]:
        raise EffnetError(f"output {out}: dtype {y.dtype} shape {y.shape}, "
                          f"expected float32 [{np.shape(x)[0]}, classes]")
    return y


@torch.no_grad()
def torch_logits(model, x):
    return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


# --------------------------------------------------------------------------
# Comparisons

def top_k(row, k=5):
    return [int(i) for i in np.argsort(-row, kind="stable")[:k]]


def check_not_collapsed(ref, label="reference"):
    """The reference must say something about its inputs: logits differ
    between samples by far more than the comparison tolerance, and softmax
    is far from uniform. Returns True when fine; prints the numbers."""
    ref = np.asarray(ref, dtype=np.float64)
    n, classes = ref.shape
    std = ref.std()
    ok = True
    pair = [(ref[i] - ref[j]).std() for i in range(n) for j in range(i + 1, n)]
    p = np.exp(ref - ref.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pmax = p.max(1)
    floor = min(5.0 / classes, 0.3)
    print(f"{label}: logits std {std:.4g}, min per-pair std of differences "
          f"{min(pair) if pair else float('nan'):.4g}, softmax max prob "
          f"{np.array2string(pmax, precision=3)} (uniform {1.0 / classes:.4g})")
    if not std > 0.5:
        print(f"FAIL {label}: logits std {std:.4g} too small")
        ok = False
    if pair and min(pair) < 0.1 * std:
        print(f"FAIL {label}: samples give nearly the same logits "
              f"(per-pair std of differences {min(pair):.4g} < 0.1 x std)")
        ok = False
    if pmax.min() < floor:
        print(f"FAIL {label}: softmax too close to uniform (max prob {pmax.min():.4g} < {floor:.4g})")
        ok = False
    if len({tuple(top_k(r)) for r in ref}) < min(n, 2):
        print(f"FAIL {label}: every sample has the same top-5")
        ok = False
    return ok


def _same_order(ref_row, got_row, k, tie):
    """Top-k of got equals top-k of ref, except that entries whose reference
    logits are within `tie` of each other may swap places (a difference
    smaller than the tolerance cannot decide their order)."""
    rk = top_k(ref_row, k)
    gk = top_k(got_row, k)
    if rk == gk:
        return True, False
    kth = ref_row[rk[-1]]
    for a, b in zip(rk, gk):
        if a == b:
            continue
        if abs(ref_row[a] - ref_row[b]) > tie:
            return False, False
        if ref_row[b] < kth - tie:
            return False, False
    return True, True


def compare_logits(label, ref, got, rel_tol=1e-3, k=5, verbose=True):
    """max |got - ref| <= rel_tol * std(ref) and the same top-k order per
    sample. Prints max abs diff, std, ratio and the top-k of each sample.
    Returns (ok, ratio)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        print(f"FAIL {label}: shape {got.shape} != reference {ref.shape}")
        return False, float("inf")
    if not np.all(np.isfinite(got)):
        print(f"FAIL {label}: {int((~np.isfinite(got)).sum())} non-finite logits")
        return False, float("inf")
    std = float(ref.std())
    diff = np.abs(got - ref)
    maxdiff = float(diff.max())
    ratio = maxdiff / std
    tol = rel_tol * std
    ok_diff = maxdiff <= tol
    ok_order = True
    rows = []
    for i in range(ref.shape[0]):
        same, tied = _same_order(ref[i], got[i], k, 2 * tol)
        ok_order &= same
        rows.append((i, float(diff[i].max()), top_k(ref[i], k), top_k(got[i], k), same, tied))
    ok = ok_diff and ok_order
    print(f"{'ok  ' if ok else 'FAIL'} {label}: max abs diff {maxdiff:.4g}, ref std {std:.4g}, "
          f"ratio {ratio:.3g} (limit {rel_tol:g}), mean abs diff {float(diff.mean()):.3g}")
    if verbose or not ok:
        for i, md, rk, gk, same, tied in rows:
            note = "" if same and not tied else (" (near-tie swap)" if same else " ORDER DIFFERS")
            print(f"     sample {i}: max diff {md:.3g} top{k} ref {rk} got {gk}{note}")
    if not ok:
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        print(f"     worst at sample {worst[0]} class {worst[1]}: ref {ref[worst]:.6g} got {got[worst]:.6g}")
    return ok, ratio


def compare_bf16(label, ref, got, rel_tol=0.03, margins=None):
    """bf16 logits within rel_tol x std(ref), and the same top-1 wherever the
    reference's top-1 margin exceeds margins[i] (absolute, per sample;
    default 0.1 x std(ref))."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape or not np.all(np.isfinite(got)):
        print(f"FAIL {label}: shape {got.shape} vs {ref.shape} or non-finite output")
        return False, float("inf")
    std = float(ref.std())
    if margins is None:
        margins = np.full(ref.shape[0], 0.1 * std)
    diff = np.abs(got - ref)
    ratio = float(diff.max()) / std
    ok = ratio <= rel_tol
    checked = 0
    for i in range(ref.shape[0]):
        s = np.sort(ref[i])[::-1]
        margin = s[0] - s[1]
        r1, g1 = int(np.argmax(ref[i])), int(np.argmax(got[i]))
        decided = margin > margins[i]
        checked += decided
        bad = decided and r1 != g1
        ok &= not bad
        print(f"     sample {i}: max diff {diff[i].max():.3g} top1 ref {r1} got {g1} "
              f"margin {margin:.3g} ({'decisive' if decided else 'not decisive'}: "
              f"threshold {margins[i]:.3g}){' TOP-1 DIFFERS' if bad else ''}  "
              f"top5 ref {top_k(ref[i])} got {top_k(got[i])}")
    print(f"{'ok  ' if ok else 'FAIL'} {label}: max abs diff {diff.max():.4g}, ref std {std:.4g}, "
          f"ratio {ratio:.3g} (limit {rel_tol:.3g}), top-1 checked on {checked}/{ref.shape[0]}")
    return ok, ratio


def expect_mismatch(label, ref, got, rel_tol=1e-3):
    """Negative control: got must miss the tolerance that compare_logits
    applies. Returns True when it does."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    ratio = float(np.abs(got - ref).max()) / float(ref.std())
    ok = ratio > rel_tol
    print(f"{'ok  ' if ok else 'FAIL'} {label}: ratio {ratio:.3g} "
          f"{'exceeds' if ok else 'is within'} the tolerance {rel_tol:g}"
          f"{' as it must' if ok else ' although it must not: the check cannot fail'}")
    return ok


def parse_size(text):
    """'384' -> (384, 384); '224x160' -> (224, 160) as (height, width)."""
    h, _, w = text.partition("x")
    return int(h), int(w or h)


class Outcome:
    """Collects check results; exit() ends the test with 0 or 1."""

    def __init__(self):
        self.failures = []

    def check(self, ok, label):
        if not ok:
            self.failures.append(label)
        return ok

    def attempt(self, label, fn, *args, **kwargs):
        """Calls fn; an effnet failure (exit status, bad output, timeout) is
        recorded as a failed check and None is returned."""
        try:
            return fn(*args, **kwargs)
        except (EffnetError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            print(f"FAIL {label}: {e}")
            self.failures.append(label)
            return None

    def forward_matches(self, label, exe, weights, x, workdir, ref, verbose=True, **kwargs):
        """Runs `effnet forward` on x and checks its logits against ref with
        compare_logits; kwargs go to effnet_forward. Returns True on a match."""
        got = self.attempt(label, effnet_forward, exe, weights, x, workdir, **kwargs)
        return got is not None and self.check(compare_logits(label, ref, got, verbose=verbose)[0], label)

    def exit(self):
        if self.failures:
            print("FAILED: " + "; ".join(self.failures))
            sys.exit(1)
        print("PASS")
        sys.exit(0)


def workdir():
    """A temporary directory removed at exit (EQUIV_KEEP=1 keeps it)."""
    d = tempfile.TemporaryDirectory(prefix="effnet-equiv-")
    if os.environ.get("EQUIV_KEEP"):
        d._finalizer.detach()
        print(f"keeping {d.name}")
    return d


# --------------------------------------------------------------------------
# Self-check of the reference side

def _selfcheck():
    out = Outcome()
    # Parameter counts and the tables against torchvision's constructors.
    for v in VARIANTS:
        m = build_table_model(v)
        n = count_params(m)
        out.check(n == PARAM_COUNTS[v], f"{v} params {n} != {PARAM_COUNTS[v]}")
        print(f"{v}: {n} parameters (published {PARAM_COUNTS[v]})")
        if v in ("s", "m", "l"):
            tv = build_torch_model(v)
            a = {k: tuple(t.shape) for k, t in tv.state_dict().items()}
            b = {k: tuple(t.shape) for k, t in m.state_dict().items()}
            out.check(a == b, f"{v}: table model differs from torchvision's")
        names = torchvision_to_timm_names(m.state_dict().keys())
        nk = sum(1 for k in m.state_dict() if not k.endswith("num_batches_tracked"))
        out.check(len(names) == nk, f"{v}: timm renaming misses keys")
        for want in ("conv_stem.weight", "bn1.running_var", "conv_head.weight",
                     "bn2.weight", "classifier.weight", "classifier.bias",
                     "blocks.0.0.conv.weight", "blocks.1.0.conv_exp.weight",
                     "blocks.1.0.conv_pwl.weight", "blocks.3.0.se.conv_reduce.bias",
                     "blocks.3.0.conv_dw.weight", "blocks.5.0.bn3.running_mean"):
            out.check(want in names.values(), f"{v}: no {want} after renaming")
        del m
    # SE width follows the block input: S blocks.3.0 has input 64 -> 16.
    s = build_torch_model("s")
    names = torchvision_to_timm_names(s.state_dict().keys())
    inv = {t: k for k, t in names.items()}
    shape = tuple(s.state_dict()[inv["blocks.3.0.se.conv_reduce.weight"]].shape)
    out.check(shape == (16, 256, 1, 1), f"S SE reduce shape {shape}")
    # TF SAME pads.
    out.check(tf_same_pads(224, 3, 2) == (0, 1), "pads 224/3/2")
    out.check(tf_same_pads(225, 3, 2) == (1, 1), "pads 225/3/2")
    out.check(tf_same_pads(7, 3, 1) == (1, 1), "pads 7/3/1")
    out.check(tf_same_pads(8, 1, 2) == (0, 0), "pads 8/1/2")
    # SAME differs from symmetric at an even size, equals it at an odd one.
    torch.manual_seed(3)
    sym = build_torch_model("b0")
    randomize(sym, 3)
    calibrate(sym, 96, 3, passes=1)
    same = build_torch_model("b0")
    same.load_state_dict(sym.state_dict())
    to_tf_same(same.eval())
    even, odd = smooth_images(2, 96, seed=5), smooth_images(2, 97, seed=5)
    d_even = float(np.abs(torch_logits(sym, even) - torch_logits(same, even)).max())
    d_odd = float(np.abs(torch_logits(sym, odd) - torch_logits(same, odd)).max())
    print(f"b0 same vs symmetric: max diff {d_even:.3g} at 96, {d_odd:.3g} at 97")
    out.check(d_even > 1e-2 and d_odd < 1e-4, "TF SAME vs symmetric")
    # Folding BN changes only rounding; the bf16 emulation changes more.
    ref = torch_logits(sym, odd)
    folded = float(np.abs(torch_logits(fold_bn(sym), odd) - ref).max()) / float(ref.std())
    emulated = float(np.abs(torch_logits(bf16_emulation(sym), odd) - ref).max()) / float(ref.std())
    print(f"b0 folded BN: ratio {folded:.3g}; bf16 emulation: ratio {emulated:.3g}")
    out.check(folded < 1e-4 and 1e-3 < emulated < 1.0, "BN folding / bf16 emulation")
    # Weights survive the safetensors round trip under both schemes.
    with workdir() as d:
        for scheme in ("torchvision", "timm"):
            p = os.path.join(d, f"w-{scheme}.safetensors")
            arrays = state_dict_arrays(sym, scheme)
            write_safetensors(p, arrays, {"format": "pt"})
            with open(p, "rb") as f:
                (hl,) = struct.unpack("<Q", f.read(8))
            out.check(hl % 8 == 0, "header length not a multiple of 8")
            back = read_safetensors(p)
            out.check(list(back) == list(arrays) and all(
                np.array_equal(back[k], arrays[k]) for k in arrays), f"round trip {scheme}")
            m2 = load_arrays_into(build_torch_model("b0"), back).eval()
            d2 = float(np.abs(torch_logits(m2, odd) - torch_logits(sym, odd)).max())
            out.check(d2 == 0.0, f"reload {scheme}: diff {d2}")
    # A calibrated reference is not collapsed.
    ref = make_reference("b0", 128, seed=4)
    out.check(check_not_collapsed(torch_logits(ref, smooth_images(4, 128, seed=9))),
              "b0 reference collapsed")
    out.exit()


if __name__ == "__main__":
    _selfcheck()
