#!/usr/bin/python3
"""End-to-end equivalence: effnetd against torchvision + PIL.

torchvision's EfficientNetV2-S with calibrated random weights (randomized BN
statistics, a classifier scaled so the logits say something; see
tests/equivalence/reftools.py) is saved under torchvision's tensor names and
served by the real effnetd. Real photos from Debian packages, and JPEG
variants of them, go over HTTP as single images and as one multipart
request. For each photo the reference is what a PyTorch user runs:

    Image.open(f).convert("RGB") -> Resize(384) -> CenterCrop(384)
      -> ToTensor -> Normalize(ImageNet) -> model -> softmax

and effnetd's top-5 labels must equal the reference's, with probabilities
within 2e-3: from /v1/classify, and from the KServe v2 infer endpoint both
for the reference's own FP32 tensors (preprocessed here by torchvision) and
for the photos sent as BYTES.

Usage: e2e_torchvision.py EFFNETD EFFNET   (meson passes both)
Exits 77 when torch, torchvision, numpy or PIL cannot be imported.
"""

import io
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "equivalence"))
import daemon as dm  # noqa: E402
import reftools as rt  # noqa: E402  (exits 77 without torch)

try:
    from PIL import Image
    from torchvision import transforms as T
except ImportError as exc:  # pragma: no cover
    sys.stderr.write(f"SKIP: {exc}\n")
    sys.exit(dm.SKIP)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from v2client import Output, Tensor, V2Client  # noqa: E402

PROB_TOL = 2e-3
SIZE = 384           # torchvision V2-S eval size
CALIB_SIZE = 224     # BatchNorm statistics from smooth images at this size, for speed


def photo_set(workdir):
    """{name: bytes}: the photos as shipped plus JPEG variants."""
    photos = {}
    for name, path in sorted(dm.sample_photos().items()):
        if name.split(".")[0] in ("grace_hopper", "chelsea", "coffee", "astronaut", "camera"):
            photos[name] = dm.read(path)
    if "grace_hopper.jpg" not in photos:
        return photos
    im = Image.open(io.BytesIO(photos["grace_hopper.jpg"])).convert("RGB")
    variants = {
        "grace_hopper-progressive.jpg": dict(format="JPEG", quality=90, progressive=True),
        "grace_hopper-444.jpg": dict(format="JPEG", quality=95, subsampling=0),
    }
    for name, kw in variants.items():
        buf = io.BytesIO()
        im.save(buf, **kw)
        photos[name] = buf.getvalue()
    buf = io.BytesIO()
    im.convert("L").save(buf, format="JPEG", quality=90)
    photos["grace_hopper-gray.jpg"] = buf.getvalue()
    if "chelsea.png" in photos:
        buf = io.BytesIO()
        Image.open(io.BytesIO(photos["chelsea.png"])).convert("RGB").save(buf, format="JPEG", quality=88)
        photos["chelsea-420.jpg"] = buf.getvalue()
    return photos


def preprocess(photos):
    """torchvision + PIL eval transforms of every photo: float [n][3][384][384], names."""
    tf = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(SIZE),
                    T.ToTensor(), T.Normalize(rt.IMAGENET_MEAN, rt.IMAGENET_STD)])
    names = sorted(photos)
    return torch.stack([tf(Image.open(io.BytesIO(photos[n])).convert("RGB")) for n in names]), names


@torch.no_grad()
def scale_classifier(model, x, seed, target_std=6.0):
    """Rescales the classifier so the logits of these photos spread by about
    target_std: BN was calibrated on smooth random images, and photos excite
    a random network far more, which would saturate the softmax and leave
    nothing for a probability comparison to see."""
    fc = model.classifier[1]
    feats = rt.pooled_features(model, x)
    mu = feats.mean(0)
    w = fc.weight.clone()
    w *= target_std / float((feats - mu).matmul(w.t()).std(1).median())
    g = torch.Generator().manual_seed(seed)
    fc.weight.copy_(w)
    fc.bias.copy_(-w.matmul(mu) + 0.1 * torch.randn(fc.bias.shape, generator=g))


@torch.no_grad()
def reference_probs(model, x, names):
    """Softmax of the reference on each photo: {name: [classes]}, and the logits."""
    logits = model(x).double()
    probs = torch.softmax(logits, dim=1).numpy()
    return {n: probs[i] for i, n in enumerate(names)}, logits.numpy()


def compare(name, ref, preds, labels, out):
    """Top-5 labels equal (entries whose reference probabilities are within
    PROB_TOL of each other may swap), probabilities within PROB_TOL."""
    want = [int(i) for i in np.argsort(-ref, kind="stable")[:5]]
    got = [p["index"] for p in preds]
    got_labels = [p["label"] for p in preds]
    diffs = [abs(p["score"] - ref[p["index"]]) for p in preds]
    same = got == want
    if not same and len(got) == 5 and sorted(got) == sorted(want):
        same = all(abs(ref[a] - ref[b]) <= PROB_TOL for a, b in zip(got, want) if a != b)
    ok = same and len(preds) == 5 and got_labels == [labels[i] for i in got] and max(diffs) <= PROB_TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name}: top-5 ref {[labels[i] for i in want]} "
          f"p {np.round(ref[want], 4).tolist()}; effnetd {got_labels} max |dp| {max(diffs):.2e}")
    out.check(ok, name)


def load_labels():
    with open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "etc", "labels", "imagenet-1k.txt")) as f:
        return f.read().splitlines()


def classify_all(d, photos, ref, labels, model_name, out):
    """Each photo alone, then all of them in one multipart request, through
    the running daemon d; every answer compared with ref (compare)."""
    names = sorted(photos)
    for name in names:
        s, _, body = d.classify(photos[name], dm.content_type_of(photos[name]))
        if not out.check(s == 200, f"{name}: HTTP {s} {str(body)[:200]}"):
            continue
        out.check(body.get("model") == model_name, f"{name}: model name {body.get('model')}")
        compare(name, ref[name], body.get("predictions", []), labels, out)
    mp, ctype = dm.multipart([(n, dm.content_type_of(photos[n]), photos[n]) for n in names])
    s, _, body = d.classify(mp, ctype)
    results = body.get("results", [])
    if out.check(s == 200 and len(results) == len(names), f"multipart of {len(names)}: HTTP {s}"):
        for n, r in zip(names, results):
            compare(f"multipart {n}", ref[n], r.get("predictions", []), labels, out)


def top5(probs, labels):
    """/v1's predictions shape from a row of v2 probabilities."""
    idx = np.argsort(-probs, kind="stable")[:5]
    return [{"index": int(i), "label": labels[int(i)], "score": float(probs[i])} for i in idx]


def classify_all_v2(d, photos, x, names, ref, labels, model_name, out):
    """The reference's own tensors as v2 FP32 binary inputs, in batches of
    up to 4, then every photo in one BYTES request; compared with ref."""
    c = V2Client(d.port)
    arr = x.numpy().astype(np.float32)
    for at in range(0, len(names), 4):
        res = c.infer(model_name, [Tensor("input", "FP32", arr[at:at + 4])], [Output("probabilities", binary=True)])
        if not out.check(res.status == 200, f"v2 FP32 batch at {at}: HTTP {res.status} {str(res.json)[:200]}"):
            continue
        probs = res.output("probabilities")
        for i, n in enumerate(names[at:at + 4]):
            compare(f"v2 FP32 {n}", ref[n], top5(probs[i], labels), labels, out)
    res = c.infer(model_name, [Tensor("input", "BYTES", [photos[n] for n in names])])
    if out.check(res.status == 200, f"v2 BYTES of {len(names)}: HTTP {res.status} {str(res.json)[:200]}"):
        probs = res.output("probabilities")
        for i, n in enumerate(names):
            compare(f"v2 BYTES {n}", ref[n], top5(probs[i], labels), labels, out)
    c.close()


def main():
    effnetd, _ = dm.find_effnet_tools()
    out = rt.Outcome()
    with tempfile.TemporaryDirectory(prefix="effnetd-e2e-") as workdir:
        photos = photo_set(workdir)
        if len(photos) < 3:
            sys.stderr.write("SKIP: sample photos missing (python3-matplotlib, python3-skimage)\n")
            sys.exit(dm.SKIP)
        model = rt.make_reference("s", SIZE, seed=3, calib_size=CALIB_SIZE)
        x, names = preprocess(photos)
        scale_classifier(model, x, seed=3)
        weights = os.path.join(workdir, "v2s-torchvision.safetensors")
        rt.save_model(model, weights, scheme="torchvision")
        ref, logits = reference_probs(model, x, names)
        # Variants of one photo rightly agree; distinctness is asked of the originals.
        originals = [i for i, n in enumerate(names) if "-" not in n]
        out.check(rt.check_not_collapsed(logits[originals], "reference on the photos"), "reference not collapsed")

        d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 4, "--max-delay-ms", 5, "--max-images", 64,
                      name="effnetd-e2e")
        try:
            s, _, b = d.request("GET", "/v1/models")
            m = dm.parse_json(b).get("models", [{}])[0]
            out.check(s == 200 and m.get("variant") == "efficientnetv2-s" and m.get("input_size") == SIZE
                      and m.get("weights_scheme") == "torchvision", f"/v1/models: {m.get('variant')}")
            classify_all(d, photos, ref, load_labels(), "efficientnetv2-s", out)
            classify_all_v2(d, photos, x, names, ref, load_labels(), "efficientnetv2-s", out)
        finally:
            rc = d.stop()
            out.check(rc == 0, f"effnetd exit status {rc}")
            if out.failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-3000:])
    out.exit()


if __name__ == "__main__":
    main()
