#!/usr/bin/python3
"""Equivalence of the image module with PIL + torchvision transforms.

Usage: image_pil.py DRIVER [--keep DIR]

DRIVER is tests/equivalence/image_preprocess (built by meson). Real photos
come from Debian packages (python3-matplotlib, python3-skimage); JPEG and
PNG variants (progressive, grayscale, 4:4:4/4:2:2/4:2:0, CMYK, restart
markers, odd sizes, 16-bit, palette + tRNS, gray + alpha, interlaced, ...)
are made from them at run time. For each file:
  - the decoded RGB must equal Image.open(f).convert("RGB") pixel for pixel;
  - for each filter (bilinear, bicubic) and crop mode (center with crop_pct,
    squash), the float tensor must match torchvision's Resize/CenterCrop/
    ToTensor/Normalize: mean absolute difference <= 0.01 (normalized units).
The fast JPEG path (reduced DCT scale) is compared with the same reference
and reported: as img_prepare runs it (margin 2) it must stay within the same
bound; with margin 1 (faster, further) within FAST_MAD_BOUND.
Exits 77 when numpy, torch, torchvision or PIL is missing.
"""
import importlib.util
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

MAD_BOUND = 0.01        # exact path, normalized units
FAST_MAD_BOUND = 0.05   # fast path with margin 1: reported, loosely bounded
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# (name, size, filter, crop, crop_pct, (mean, std)) — the preprocessing table
# of docs/model.md plus a padding case (crop_pct > 1).
CONFIGS = [
    ("tv-s bilinear center 384", 384, "bilinear", "center", 1.0, IMAGENET),
    ("timm-b0 bicubic center 224/.875", 224, "bicubic", "center", 0.875, IMAGENET),
    ("timm-b2 bicubic center 260/.890", 260, "bicubic", "center", 0.890, IMAGENET),
    ("bilinear center 240/.882", 240, "bilinear", "center", 0.882, HALF),
    ("timm-m bicubic squash 480", 480, "bicubic", "squash", 1.0, HALF),
    ("bilinear squash 300/.904", 300, "bilinear", "squash", 0.904, IMAGENET),
    ("bicubic center pad 224/1.15", 224, "bicubic", "center", 1.15, HALF),
]
FAST_CONFIGS = [CONFIGS[1], CONFIGS[0], CONFIGS[4]]

INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def reference(img, size, filt, crop, pct, norm):
    scale = math.floor(size / pct)
    resize = T.Resize(scale if crop == "center" else (scale, scale), interpolation=INTERP[filt])
    t = T.Compose([resize, T.CenterCrop(size), T.ToTensor(), T.Normalize(*norm)])
    return t(img).numpy()


def find_photos():
    photos = []
    mpl = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
    spec = importlib.util.find_spec("matplotlib")
    for base in ([mpl] + ([os.path.join(p, "mpl-data/sample_data/grace_hopper.jpg")
                           for p in spec.submodule_search_locations] if spec else [])):
        if os.path.exists(base):
            photos.append(base)
            break
    spec = importlib.util.find_spec("skimage")
    if spec:
        d = os.path.join(list(spec.submodule_search_locations)[0], "data")
        for n in ("chelsea.png", "coffee.png", "astronaut.png", "camera.png",
                  "hubble_deep_field.jpg", "retina.jpg", "rocket.jpg"):
            if os.path.exists(os.path.join(d, n)):
                photos.append(os.path.join(d, n))
    return photos


def png_chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def write_png(path, a, color_type, depth=8, interlace=False, extra=b""):
    """Writes a (H, W[, C]) array as PNG with filter 0 rows (any depth >= 8)."""
    a = np.asarray(a)
    h, w = a.shape[:2]
    dt = ">u2" if depth == 16 else "u1"

    def rows(sub):
        sub = sub.astype(dt)
        return b"".join(b"\0" + sub[y].tobytes() for y in range(sub.shape[0]))

    if interlace:
        raw = b""
        for xs, ys, xstep, ystep in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                                     (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = a[ys::ystep, xs::xstep]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    else:
        raw = rows(a)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
                + png_chunk(b"IDAT", zlib.compress(raw, 6)) + png_chunk(b"IEND", b""))


def make_variants(photos, d):
    """Returns [(path, pil_reference_image or None)]; None: PIL's own decode."""
    out = []
    src = {os.path.basename(p): p for p in photos}
    for p in photos:
        out.append((p, None))
    # Damaged data libjpeg recovers from (found by fuzzing): same pixels.
    corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "jpeg")
    damaged = os.path.join(corpus, "regress_corrupt_at_1_8.jpg")
    if os.path.exists(damaged):
        out.append((damaged, None))
    chelsea = Image.open(src.get("chelsea.png", photos[0])).convert("RGB")
    gh = Image.open(src.get("grace_hopper.jpg", photos[0])).convert("RGB")

    def save(name, im, **kw):
        path = os.path.join(d, name)
        im.save(path, **kw)
        out.append((path, None))

    save("chelsea_q90_420.jpg", chelsea, quality=90, subsampling=2)
    save("chelsea_q95_444.jpg", chelsea, quality=95, subsampling=0)
    save("chelsea_q85_422.jpg", chelsea, quality=85, subsampling=1)
    save("chelsea_progressive.jpg", chelsea, quality=90, progressive=True)
    save("grace_gray.jpg", gh.convert("L"), quality=90)
    save("grace_cmyk.jpg", gh.convert("CMYK"), quality=92)
    save("chelsea_odd_333x251.jpg", chelsea.crop((7, 11, 340, 262)), quality=88)
    save("chelsea_small_97x61.jpg", chelsea.resize((97, 61), Image.BICUBIC), quality=90)
    save("chelsea_wide_451x40.jpg", chelsea.crop((0, 100, 451, 140)), quality=90)
    cjpeg = shutil.which("cjpeg")
    if cjpeg:  # libjpeg-turbo-progs: restart markers, arithmetic coding
        ppm = os.path.join(d, "chelsea.ppm")
        chelsea.save(ppm)
        for name, args in (("chelsea_restart.jpg", ["-restart", "1"]),
                           ("chelsea_arith.jpg", ["-arithmetic"])):
            path = os.path.join(d, name)
            subprocess.run([cjpeg, "-quality", "90", *args, "-outfile", path, ppm], check=True)
            out.append((path, None))
    # Large JPEGs for the fast path.
    save("hubble_2x.jpg", Image.open(src["hubble_deep_field.jpg"]).resize((2000, 1744), Image.LANCZOS)
         if "hubble_deep_field.jpg" in src else chelsea.resize((2000, 1330)), quality=90)
    save("grace_3x_420.jpg", gh.resize((1536, 1800), Image.LANCZOS), quality=90)

    # PNGs: PIL writes 8-bit kinds; 16-bit and interlaced ones by hand.
    a = np.asarray(chelsea)
    h, w = a.shape[:2]
    alpha = (np.arange(w)[None, :] * 255 // (w - 1) * np.ones((h, 1))).astype(np.uint8)
    rgba = np.dstack([a, alpha])
    save("chelsea_rgba.png", Image.fromarray(rgba, "RGBA"))
    save("chelsea_la.png", Image.fromarray(np.dstack([a[..., 1], alpha]), "LA"))
    save("chelsea_gray.png", chelsea.convert("L"))
    save("chelsea_1bit.png", chelsea.convert("1"))
    pal = chelsea.quantize(colors=200)
    save("chelsea_palette_trns.png", pal, transparency=3)
    save("chelsea_palette_4bit.png", chelsea.quantize(colors=16), bits=4)
    a16 = a.astype(np.uint16) * 257 + (np.arange(w)[None, :, None] % 251).astype(np.uint16)
    write_png(os.path.join(d, "chelsea_rgb16.png"), a16, 2, 16)
    out.append((os.path.join(d, "chelsea_rgb16.png"), None))
    write_png(os.path.join(d, "chelsea_rgba16.png"), np.dstack([a16, alpha.astype(np.uint16) * 257]), 6, 16)
    out.append((os.path.join(d, "chelsea_rgba16.png"), None))
    write_png(os.path.join(d, "chelsea_rgb_adam7.png"), a, 2, 8, interlace=True)
    out.append((os.path.join(d, "chelsea_rgb_adam7.png"), Image.fromarray(a, "RGB")))
    trns = png_chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30))
    write_png(os.path.join(d, "chelsea_rgb_trns.png"), a, 2, 8, extra=trns)
    out.append((os.path.join(d, "chelsea_rgb_trns.png"), None))
    # 16-bit gray: PIL clips its mode "I" to 255 in convert("RGB"); the image
    # module keeps the high byte, so the reference is the high byte.
    g16 = a16[..., 1]
    write_png(os.path.join(d, "chelsea_gray16.png"), g16, 0, 16)
    out.append((os.path.join(d, "chelsea_gray16.png"),
                Image.fromarray((g16 >> 8).astype(np.uint8), "L").convert("RGB")))
    return out


def run(driver, args):
    return subprocess.run([driver, *args], capture_output=True, text=True)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    driver = os.path.abspath(sys.argv[1])
    photos = find_photos()
    if not photos:
        print("skip: no sample photos (python3-matplotlib, python3-skimage)")
        return 77
    keep = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--keep" else None
    d = keep or tempfile.mkdtemp(prefix="image_pil.")
    os.makedirs(d, exist_ok=True)
    failures = []
    worst = {"decode_px": 0, "mad": 0.0, "max": 0.0}
    fast = []
    try:
        variants = make_variants(photos, d)
        print(f"{len(variants)} images, {len(CONFIGS)} configurations; bound MAD <= {MAD_BOUND}")
        for path, ref_img in variants:
            name = os.path.basename(path)
            img = ref_img if ref_img is not None else Image.open(path).convert("RGB")
            ref_rgb = np.asarray(img)
            npy = os.path.join(d, "out.npy")
            r = run(driver, ["--decode", path, npy])
            if r.returncode != 0:
                failures.append(f"{name}: decode failed: {r.stderr.strip()}")
                continue
            dec = np.load(npy)
            diff_px = int((dec != ref_rgb).any(axis=-1).sum()) if dec.shape == ref_rgb.shape else -1
            if diff_px != 0:
                failures.append(f"{name}: decoded RGB differs from PIL "
                                f"({'shape ' + str(dec.shape) if diff_px < 0 else str(diff_px) + ' pixels'})")
            worst["decode_px"] = max(worst["decode_px"], abs(diff_px))
            line = []
            for cname, size, filt, crop, pct, norm in CONFIGS:
                ref = reference(img, size, filt, crop, pct, norm)
                r = run(driver, ["--size", str(size), "--resize", filt, "--crop", crop,
                                 "--crop-pct", repr(pct), "--mean", ",".join(map(str, norm[0])),
                                 "--std", ",".join(map(str, norm[1])), path, npy])
                if r.returncode != 0:
                    failures.append(f"{name} [{cname}]: failed: {r.stderr.strip()}")
                    continue
                got = np.load(npy)
                if got.shape != ref.shape:
                    failures.append(f"{name} [{cname}]: shape {got.shape} != {ref.shape}")
                    continue
                e = np.abs(got - ref)
                mad, mx = float(e.mean()), float(e.max())
                worst["mad"] = max(worst["mad"], mad)
                worst["max"] = max(worst["max"], mx)
                line.append(f"{mad:.1e}/{mx:.1e}")
                if not mad <= MAD_BOUND:
                    failures.append(f"{name} [{cname}]: MAD {mad:.4g} > {MAD_BOUND} (max {mx:.4g})")
            print(f"  {name:32s} {img.size[0]}x{img.size[1]} decode-diff-px={diff_px} "
                  f"MAD/max: {' '.join(line)}")
            if not name.endswith(".jpg"):
                continue
            for cname, size, filt, crop, pct, norm in FAST_CONFIGS:
                ref = reference(img, size, filt, crop, pct, norm)
                scale = math.floor(size / pct)
                # margin 0: img_prepare's own (IMG_JPEG_FAST_MARGIN = 2)
                for margin, shown, bound in ((0, 2, MAD_BOUND), (1, 1, FAST_MAD_BOUND)):
                    extra = ["--margin", str(margin)] if margin else []
                    r = run(driver, ["--fast", *extra, "--size", str(size),
                                     "--resize", filt, "--crop", crop, "--crop-pct", repr(pct),
                                     "--mean", ",".join(map(str, norm[0])),
                                     "--std", ",".join(map(str, norm[1])), path, npy])
                    if r.returncode != 0:
                        failures.append(f"{name} [fast {cname}]: failed: {r.stderr.strip()}")
                        continue
                    e = np.abs(np.load(npy) - ref)
                    # whether a reduced scale was used (both sides >= 2 x margin x target)
                    reduced = min(img.size) >= 2 * shown * scale
                    fast.append((name, cname, shown, reduced, float(e.mean()), float(e.max())))
                    if not e.mean() <= bound:
                        failures.append(f"{name} [fast margin {shown} {cname}]: "
                                        f"MAD {e.mean():.4g} > {bound}")

        # Files PIL refuses must be refused too.
        spec = importlib.util.find_spec("skimage")
        bad = []
        if spec:
            t = os.path.join(list(spec.submodule_search_locations)[0], "data", "truncated.jpg")
            if os.path.exists(t):
                bad.append(t)
        with open(os.path.join(d, "chelsea_q90_420.jpg"), "rb") as f:
            data = f.read()
        for cut in (len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 2):
            p = os.path.join(d, f"cut_{cut}.jpg")
            with open(p, "wb") as f:
                f.write(data[:cut])
            bad.append(p)
        with open(os.path.join(d, "chelsea_gray.png"), "rb") as f:
            data = f.read()
        p = os.path.join(d, "cut.png")
        with open(p, "wb") as f:
            f.write(data[:len(data) // 2])
        bad.append(p)
        for p in bad:
            try:
                Image.open(p).convert("RGB")
                pil_ok = True
            except Exception:
                pil_ok = False
            r = run(driver, ["--decode", p, os.path.join(d, "out.npy")])
            ok = r.returncode == 0
            print(f"  truncated {os.path.basename(p)}: PIL {'accepts' if pil_ok else 'rejects'}, "
                  f"image module {'accepts' if ok else 'rejects: ' + r.stderr.strip()}")
            if ok or pil_ok:
                failures.append(f"{os.path.basename(p)}: expected both to reject")

        print(f"exact path: worst decode pixels differing {worst['decode_px']}, "
              f"worst MAD {worst['mad']:.3g}, worst max abs {worst['max']:.3g}")
        if fast:
            print("fast JPEG path (reduced DCT scale) vs reference: image config margin reduced MAD max")
            for n, c, m, red, mad, mx in fast:
                print(f"  {n:28s} {c:32s} {m} {'yes' if red else 'no ':3s} {mad:.4f} {mx:.3f}")
            for m in (2, 1):
                sel = [x for x in fast if x[2] == m and x[3]]
                if sel:
                    print(f"fast path margin {m}: {len(sel)} reduced decodes, mean MAD "
                          f"{sum(x[4] for x in sel) / len(sel):.4f}, worst MAD "
                          f"{max(x[4] for x in sel):.4f}, worst max {max(x[5] for x in sel):.3f}")
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
