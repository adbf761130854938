#!/usr/bin/python3
"""End-to-end equivalence: effnetd serving timm-named EfficientNetV2-B0
weights, against torch + PIL.

A B0 with calibrated random weights (randomized BN statistics, a classifier
scaled on the photos' features so the softmax is not saturated; see
tests/equivalence/reftools.py and e2e_torchvision.py) is built in torch with
TensorFlow 'SAME' padding (explicit asymmetric F.pad) and saved under timm's
tensor names (`conv_stem.weight`, `blocks.S.B.conv_pw.weight`, ...). effnetd
gets no padding or preprocessing option: for timm names it must choose TF
'SAME' padding and timm's B0 eval preprocessing by itself. Real photos from
Debian packages and JPEG variants of them go over HTTP, as single images and
as one multipart request. For each photo the reference is timm's eval
transform written with torchvision on PIL:

    Image.open(f).convert("RGB") -> Resize(int(224 / 0.875) = 256, bicubic)
      -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet) -> model -> softmax

and effnetd's top-5 labels must equal the reference's, with probabilities
within 2e-3. Negative controls show that the same weights with
torchvision's symmetric padding, or the photos with torchvision's
preprocessing (Resize(224) bilinear, no crop_pct), would miss that
tolerance, so the test does see which padding and preprocessing effnetd
chooses.

Usage: e2e_timm_b0.py EFFNETD EFFNET   (meson passes both)
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
import e2e_torchvision as e2e  # noqa: E402  (photo set, classifier scaling, comparison)

try:
    from PIL import Image
    from torchvision import transforms as T
except ImportError as exc:  # pragma: no cover
    sys.stderr.write(f"SKIP: {exc}\n")
    sys.exit(dm.SKIP)

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROB_TOL = e2e.PROB_TOL
SIZE = 224           # timm tf_efficientnetv2_b0 eval size
CROP_PCT = 0.875
SEED = 5


def photo_set(workdir):
    """The photos and JPEG variants of the V2-S test, plus a few more
    encodings of the same photo: 4:2:2, CMYK and a low quality."""
    photos = e2e.photo_set(workdir)
    if "grace_hopper.jpg" not in photos:
        return photos
    im = Image.open(io.BytesIO(photos["grace_hopper.jpg"])).convert("RGB")
    for name, img, kw in (
            ("grace_hopper-422.jpg", im, dict(quality=92, subsampling=1)),
            ("grace_hopper-q40.jpg", im, dict(quality=40)),
            ("grace_hopper-cmyk.jpg", im.convert("CMYK"), dict(quality=92))):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", **kw)
        photos[name] = buf.getvalue()
    return photos


def preprocess(photos, scale=int(SIZE / CROP_PCT), interpolation=T.InterpolationMode.BICUBIC):
    """timm's eval transform for B0 with torchvision on PIL (shorter side to
    floor(224 / 0.875) = 256, bicubic): float [n][3][224][224], names."""
    tf = T.Compose([T.Resize(scale, interpolation=interpolation), T.CenterCrop(SIZE),
                    T.ToTensor(), T.Normalize(rt.IMAGENET_MEAN, rt.IMAGENET_STD)])
    names = sorted(photos)
    return torch.stack([tf(Image.open(io.BytesIO(photos[n])).convert("RGB")) for n in names]), names


def main():
    effnetd, _ = dm.find_effnet_tools()
    out = rt.Outcome()
    with tempfile.TemporaryDirectory(prefix="effnetd-e2e-b0-") as workdir:
        photos = photo_set(workdir)
        if len(photos) < 3:
            sys.stderr.write("SKIP: sample photos missing (python3-matplotlib, python3-skimage)\n")
            sys.exit(dm.SKIP)
        model = rt.make_reference("b0", SIZE, seed=SEED, padding="same")
        x, names = preprocess(photos)
        e2e.scale_classifier(model, x, seed=SEED)
        weights = os.path.join(workdir, "b0-timm.safetensors")
        rt.save_model(model, weights, scheme="timm")
        header, _ = rt.read_safetensors_header(weights)
        out.check("conv_stem.weight" in header and "blocks.5.7.conv_pwl.weight" in header
                  and not any(k.startswith("features.") for k in header), "weights saved under timm names")
        ref, logits = e2e.reference_probs(model, x, names)
        originals = [i for i, n in enumerate(names) if "-" not in n]
        out.check(rt.check_not_collapsed(logits[originals], "reference on the photos"), "reference not collapsed")

        # Negative control: the same weights with symmetric padding.
        sym, _ = e2e.reference_probs(rt.to_symmetric(model), x, names)
        worst = max(float(np.abs(sym[n] - ref[n]).max()) for n in names)
        print(f"symmetric instead of TF 'SAME' padding: max |dp| {worst:.3g} (tolerance {PROB_TOL:g})")
        out.check(worst > 2 * PROB_TOL, "padding negative control: symmetric padding must miss the tolerance")
        # And torchvision's preprocessing (no crop_pct, bilinear) instead of timm's.
        tv, _ = e2e.reference_probs(model, preprocess(photos, SIZE, T.InterpolationMode.BILINEAR)[0], names)
        worst = max(float(np.abs(tv[n] - ref[n]).max()) for n in names)
        print(f"torchvision's preprocessing instead of timm's: max |dp| {worst:.3g} (tolerance {PROB_TOL:g})")
        out.check(worst > 2 * PROB_TOL, "preprocessing negative control: it must miss the tolerance")

        d = dm.Daemon(effnetd, weights, workdir, "--max-batch", 4, "--max-delay-ms", 5, name="effnetd-e2e-b0")
        try:
            s, _, b = d.request("GET", "/v1/models")
            m = dm.parse_json(b).get("models", [{}])[0]
            pp = m.get("preprocessing", {})
            out.check(s == 200 and m.get("variant") == "efficientnetv2-b0" and m.get("input_size") == SIZE
                      and m.get("weights_scheme") == "timm", f"/v1/models: {m.get('variant')} {m.get('input_size')} "
                      f"{m.get('weights_scheme')}")
            out.check(pp.get("resize") == "bicubic" and pp.get("crop") == "center"
                      and abs(pp.get("crop_pct", 0) - CROP_PCT) < 1e-6
                      and np.allclose(pp.get("mean", []), rt.IMAGENET_MEAN, atol=1e-6)
                      and np.allclose(pp.get("std", []), rt.IMAGENET_STD, atol=1e-6),
                      f"/v1/models preprocessing {pp}")
            e2e.classify_all(d, photos, ref, e2e.load_labels(), "efficientnetv2-b0", out)
        finally:
            rc = d.stop()
            out.check(rc == 0, f"effnetd exit status {rc}")
            if out.failures:
                print("---- effnetd log (tail) ----\n" + d.log_text()[-3000:])
    out.exit()


if __name__ == "__main__":
    main()
