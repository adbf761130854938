#!/usr/bin/python3
"""int8 end to end: effnet calibrate on the photo set, effnetd serving int8.

Usage: test_int8_serve.py EFFNETD EFFNET

Seeded B0 weights (untrained: the figures say nothing of accuracy, only that
they are computed and shown). Checks:
  - effnet calibrate on the photos Debian ships (MSE clipping, every layer
    in int8, which is quick; the equivalence tests run the per-layer
    sensitivity pass) writes a calibration naming the weights' sha256, with
    a self-check on the held-out photos;
  - effnetd --precision int8 --calibration serves int8: /v1/models says so
    with "int8": {"top1_agreement", "images", ...} equal to the file's, the
    start-up log says the same figures, and a photo is classified;
  - refused cleanly, by effnetd at start-up and by effnet forward: int8
    without a calibration, a calibration made for other weights, one naming
    a layer the model does not have, one putting the stem in int8, one that
    is not JSON, one of an older version (its self-check measured another
    int8 plan); effnetd --precision auto never runs int8.
"""
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import daemon as dm  # noqa: E402
from daemon import check  # noqa: E402


def run(cmd, timeout=900):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def refused_at_start(effnetd, weights, d, args, words, label):
    p = run([effnetd, "--weights", weights, "--listen", "127.0.0.1:0"] + args, timeout=300)
    ok = p.returncode != 0 and all(w in p.stderr for w in words) and "listening" not in p.stderr
    check(ok, f"effnetd refuses {label}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")


def main():
    effnetd, effnet = sys.argv[1], sys.argv[2]
    photos = sorted(dm.sample_photos().values())
    if len(photos) < 4:
        print(f"SKIP: {len(photos)} photos (python3-matplotlib, python3-skimage)")
        return 77
    with tempfile.TemporaryDirectory(prefix="effnet-int8-") as d:
        w = os.path.join(d, "b0.safetensors")
        other = os.path.join(d, "b0-other.safetensors")
        for path, seed in ((w, 5), (other, 6)):
            subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", str(seed), "-o", path], check=True)
        cal = os.path.join(d, "b0.cal.json")
        p = run([effnet, "calibrate", "--weights", w, "--images"] + photos +
                ["--method", "mse", "--threshold", "-1", "-o", cal])
        check(p.returncode == 0 and os.path.exists(cal), f"effnet calibrate: {p.stdout.strip()} {p.stderr[-300:]}")
        c = json.load(open(cal))
        k = c["selfcheck"]
        check(len(c["weights_sha256"]) == 64 and k["images"] >= 1 and c["images"] + k["images"] == len(photos),
              f"calibration: sha256 {c['weights_sha256'][:16]}..., {c['images']} images for the scales, "
              f"{k['images']} held out")
        check(any(layer["int8"] for layer in c["layers"]), "some layers in int8")

        srv = dm.Daemon(effnetd, w, d, "--precision", "int8", "--calibration", cal, "--max-batch", "2",
                        name="effnetd-int8")
        try:
            status, _, body = srv.request("GET", "/v1/models")
            m = dm.parse_json(body)["models"][0]
            got = m.get("int8") or {}
            same = all(abs(got.get(key, -1) - k[key]) < 1e-6 for key in
                       ("top1_agreement", "top5_overlap", "max_logit_diff", "rms_logit_diff"))
            check(status == 200 and m.get("precision") == "int8" and got.get("images") == k["images"] and same,
                  f"/v1/models: precision {m.get('precision')}, int8 {got}")
            log = [line for line in srv.log_text().splitlines() if "int8:" in line]
            check(len(log) == 1 and f"{k['top1_agreement']:.3f}" in log[0] and f"{k['images']} images" in log[0],
                  f"start-up log: {log}")
            status, _, answer = srv.classify(dm.read(photos[0]),
                                             "image/png" if photos[0].endswith(".png") else "image/jpeg")
            check(status == 200 and len(answer.get("predictions", [])) == 5, f"classify in int8: {status}")
        finally:
            srv.stop()

        auto = dm.Daemon(effnetd, w, d, "--precision", "auto", "--calibration", cal, "--max-batch", "1",
                         name="effnetd-auto")
        try:
            _, _, body = auto.request("GET", "/v1/models")
            m = dm.parse_json(body)["models"][0]
            check(m.get("precision") in ("fp32", "bf16") and "int8" not in m, f"auto runs {m.get('precision')}")
        finally:
            auto.stop()

        # Hostile or mistaken calibrations.
        def variant(name, fn):
            o = json.load(open(cal))
            fn(o)
            path = os.path.join(d, name)
            json.dump(o, open(path, "w"))
            return path
        unknown = variant("unknown.json", lambda o: o["layers"][1].update(name="blocks.99.conv1"))
        stem = variant("stem.json", lambda o: o["layers"][0].update(int8=True))
        older = variant("older.json", lambda o: o.update(version=o["version"] - 1))
        broken = os.path.join(d, "broken.json")
        open(broken, "w").write(open(cal).read()[:200])
        cases = [([], ["int8", "calibration"], "int8 without a calibration"),
                 (["--calibration", broken], ["calibration", "JSON"], "a truncated calibration"),
                 (["--calibration", unknown], ["blocks.99.conv1"], "a layer the model does not have"),
                 (["--calibration", stem], ["stem", "int8"], "the stem in int8"),
                 (["--calibration", older], ["older effnet", "effnet calibrate again"], "an older version's file")]
        for args, words, label in cases:
            refused_at_start(effnetd, w, d, ["--precision", "int8"] + args, words, label)
        refused_at_start(effnetd, other, d, ["--precision", "int8", "--calibration", cal],
                         ["other weights", "effnet calibrate"], "a calibration made for other weights")
        import numpy as np
        x = os.path.join(d, "x.npy")
        np.save(x, np.zeros((1, 3, 64, 64), np.float32))
        p = run([effnet, "forward", "--weights", other, "--input", x, "--output", os.path.join(d, "y.npy"),
                 "--precision", "int8", "--calibration", cal])
        check(p.returncode != 0 and "other weights" in p.stderr, f"effnet forward refuses it: {p.stderr.strip()}")
    dm.finish()


if __name__ == "__main__":
    sys.exit(main())
