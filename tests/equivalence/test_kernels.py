#!/usr/bin/python3
"""The kernels effnet runs on this CPU, as capped by DNNL_MAX_CPU_ISA.

Usage: test_kernels.py EFFNET [EFFNETD]

Seeded V2-S (torchvision names) at 384 and B0 (timm names, TF SAME) at 224,
`effnet bench --json` at batch 1 and 8:
  - the ISA it reports is oneDNN's effective one (`effnet cpu`), and the
    fp32 layout is the one `effnet cpu` names for it;
  - no primitive is a reference kernel ("ref:..."), in fp32 and, where the
    CPU has native bf16, in bf16;
  - without native bf16: --precision bf16 fails in `effnet` (and effnetd
    refuses to start) with a message that says what bf16 needs and what to
    use instead, and --precision auto runs fp32;
  - with it: --precision auto runs bf16;
  - effnetd --precision auto serves what `effnet cpu` says auto picks, and
    /v1/models and the start-up log name it with the ISA;
  - `effnet cpu` and /v1/models name the oneDNN version the package
    manager has installed (2.x or 3.x: the engine builds on either).
Negative control, under the AVX2 class: 16-channel blocks (EFFNET_LAYOUT),
for which oneDNN has no AVX2 kernel, must be refused and the layer named.
"""
import json
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "integration"))
import reftools as rt  # noqa: E402  (exits 77 without torch)
import daemon as dm  # noqa: E402


def onednn_package_version():
    """libdnnl-dev's version as dpkg knows it ("2.6.3-1"), or None."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libdnnl-dev"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def bench(exe, weights, precision, batches="1,8", env=None):
    """(returncode, [json rows], stderr) of one `effnet bench` run."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([exe, "bench", "--weights", weights, "--batch", batches, "--runs", "1", "--warmup", "0",
                        "--precision", precision, "--json"], capture_output=True, text=True, env=e, timeout=900)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, rows, p.stderr


def check_rows(out, label, rows, cpu, precision, layout):
    out.check(len(rows) == 2, f"{label}: one row per batch size")
    for r in rows:
        refs = {k: v for k, v in r["kernels"].items() if k.startswith("ref")}
        ok = (r["isa"] == cpu["isa"] and r["precision"] == precision and r["layout"] == layout and not refs
              and sum(r["kernels"].values()) > 0)
        print(f"{'ok  ' if ok else 'FAIL'} {label} batch {r['batch']}: {r['isa']}, {r['precision']}, "
              f"{r['layout']}, kernels {r['kernels']}")
        out.check(ok, f"{label} batch {r['batch']}")


def main():
    exe = rt.effnet_path()
    effnetd = sys.argv[2] if len(sys.argv) > 2 else None
    cpu = rt.cpu_info(exe)
    print(f"effnet cpu: {cpu}")
    out = rt.Outcome()
    with rt.workdir() as d:
        nets = []
        for variant, scheme in (("s", "torchvision"), ("b0", "timm")):
            path = os.path.join(d, f"{variant}.safetensors")
            subprocess.run([exe, "init-weights", "--variant", variant, "--scheme", scheme, "--seed", "7", "-o",
                            path], check=True)
            nets.append((f"{variant.upper()} {scheme}", path))

        for name, path in nets:
            rc, rows, err = bench(exe, path, "fp32")
            out.check(rc == 0, f"{name} fp32 runs ({err.strip()[-300:]})")
            check_rows(out, f"{name} fp32", rows, cpu, "fp32", cpu["fp32_layout"])
            rc, rows, err = bench(exe, path, "auto")
            want = "bf16" if cpu["bf16"] else "fp32"
            out.check(rc == 0, f"{name} auto runs ({err.strip()[-300:]})")
            check_rows(out, f"{name} auto", rows, cpu, want, cpu["bf16_layout"] if cpu["bf16"] else cpu["fp32_layout"])
            if cpu["bf16"]:
                rc, rows, err = bench(exe, path, "bf16")
                out.check(rc == 0, f"{name} bf16 runs ({err.strip()[-300:]})")
                check_rows(out, f"{name} bf16", rows, cpu, "bf16", cpu["bf16_layout"])

        path = nets[1][1]
        if not cpu["bf16"]:
            rc, rows, err = bench(exe, path, "bf16", batches="1")
            msg = err.strip()
            ok = rc != 0 and not rows and all(w in msg for w in ("AVX512_BF16", "AMX", cpu["isa"], "fp32", "auto"))
            print(f"{'ok  ' if ok else 'FAIL'} effnet --precision bf16 without native bf16: exit {rc}: {msg}")
            out.check(ok, "bf16 refused by effnet with what it needs and what to use")
            if effnetd:
                p = subprocess.run([effnetd, "--weights", path, "--listen", "127.0.0.1:0", "--precision", "bf16"],
                                   capture_output=True, text=True, timeout=120)
                said = [line for line in p.stderr.splitlines() if "bf16 needs" in line]
                ok = p.returncode != 0 and said and "AVX512_BF16" in said[0] and "fp32" in said[0]
                print(f"{'ok  ' if ok else 'FAIL'} effnetd --precision bf16 without native bf16: exit "
                      f"{p.returncode}: {said[0] if said else p.stderr.strip()[-400:]}")
                out.check(ok, "bf16 refused by effnetd at start-up")

        if effnetd:
            # The daemon resolves auto the same way and says what it serves.
            d2 = dm.Daemon(effnetd, path, d, "--precision", "auto", "--max-batch", "2", name="effnetd-auto")
            try:
                status, _, body = d2.request("GET", "/v1/models")
                m = (dm.parse_json(body).get("models") or [{}])[0]
                log = [line for line in d2.log_text().splitlines() if "precision auto" in line]
            finally:
                d2.stop()
            ok = (status == 200 and m.get("precision") == cpu["auto_precision"] and m.get("cpu_isa") == cpu["isa"]
                  and len(log) == 1 and cpu["isa"] in log[0])
            print(f"{'ok  ' if ok else 'FAIL'} effnetd --precision auto serves {m.get('precision')} on "
                  f"{m.get('cpu_isa')}; log: {log}")
            out.check(ok, "effnetd --precision auto")
            # Both report the oneDNN they run on, as the package manager knows it.
            pkg = onednn_package_version()
            ok = m.get("onednn") == cpu.get("onednn") and pkg is not None and pkg.startswith(f"{cpu.get('onednn')}")
            print(f"{'ok  ' if ok else 'FAIL'} oneDNN version: /v1/models {m.get('onednn')}, effnet cpu "
                  f"{cpu.get('onednn')}, libdnnl-dev {pkg}")
            out.check(ok, "the oneDNN version reported")

        if cpu["isa"] == "avx2":
            rc, rows, err = bench(exe, path, "fp32", batches="1", env={"EFFNET_LAYOUT": "nChw16c"})
            ok = rc != 0 and not rows and "reference kernel" in err and "avx2" in err and "stem" in err
            print(f"{'ok  ' if ok else 'FAIL'} negative control, nChw16c on avx2: exit {rc}: {err.strip()}")
            out.check(ok, "a plan with a reference kernel is refused, naming the layer and ISA")
    out.exit()


if __name__ == "__main__":
    main()
