#!/usr/bin/python3
"""Turns the JSON lines of the engine-peers benchmark into a markdown report:
throughput per runtime and batch size, ratios against the peers measured in
the same run, start-up and memory, effnet under oneDNN ISA caps, machine facts.
"""
import argparse
import json
import os
import platform
import subprocess


def read_lines(path):
    """JSON objects with a 'batch' key, one per line; other lines ignored."""
    rows = {}
    if not path or not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if isinstance(o, dict) and "batch" in o and "images_per_s" in o:
                b = int(o["batch"])
                # several rounds: keep the best one (noise only slows down)
                if b not in rows or o["images_per_s"] > rows[b]["images_per_s"]:
                    rows[b] = o
    return rows


def cpu_facts():
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model == "unknown":
                    model = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                       "amx_bf16", "amx_int8") if f in flags]
    return model, isa


def read_json(text):
    """One JSON object from a string, {} when absent or not JSON."""
    try:
        o = json.loads(text) if text else {}
    except ValueError:
        return {}
    return o if isinstance(o, dict) else {}


def read_caps(path):
    """`effnet cpu` under each cap, in the order the caps were given."""
    caps = []
    if not path or not os.path.exists(path):
        return caps
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            o = read_json(line.strip())
            if o.get("max_cpu_isa"):
                caps.append(o)
    return caps


def ref_kernels(r):
    # A reference kernel under a cap means oneDNN found no JIT kernel for that
    # ISA: the row then measures a fallback, not what such a CPU would run.
    if not r:
        return "n/a"
    kernels = r.get("kernels")
    if not isinstance(kernels, dict):
        return "kernels n/a"
    refs = sorted(k for k in kernels if k.startswith("ref"))
    if not refs:
        return "no reference kernel"
    return "reference: " + ", ".join(f"{k} ({kernels[k]})" for k in refs)


def dpkg_version(pkg):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}"


def ratio(a, b):
    if not a or not b:
        return "n/a"
    return f"{a['images_per_s'] / b['images_per_s']:.2f}x"


def cell(r):
    if not r:
        return "n/a"
    return f"{r['images_per_s']:.2f} ({r['ms_per_batch']:.1f} ms)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ort")
    ap.add_argument("--torch")
    ap.add_argument("--effnet-fp32")
    ap.add_argument("--effnet-bf16")
    ap.add_argument("--variant", default="s")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--effnet-version", default="")
    ap.add_argument("--node-version", default="")
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--effnet-cpu", default="",
                    help="`effnet cpu` output (JSON) for the runs without a cap")
    ap.add_argument("--caps-cpu",
                    help="JSON lines, `effnet cpu` under each DNNL_MAX_CPU_ISA cap")
    ap.add_argument("--capped-dir",
                    help="where effnet-fp32@CAP.jsonl and effnet-bf16@CAP.jsonl are "
                         "(default: the directory of --caps-cpu)")
    args = ap.parse_args()

    ort = read_lines(args.ort)
    pt = read_lines(args.torch)
    e32 = read_lines(args.effnet_fp32)
    e16 = read_lines(args.effnet_bf16)
    batches = [int(b) for b in args.batch.split(",")]
    ecpu = read_json(args.effnet_cpu)
    # Without `effnet cpu` nothing was checked and bf16 ran as before.
    bf16_run = ecpu.get("bf16", True) is not False
    cell16 = cell if bf16_run else (lambda r: "not run")

    print(f"## EfficientNetV2-{args.variant.upper()} @ {args.size}, "
          f"{args.threads} threads, median of {args.runs} runs"
          + (f", best of {args.rounds} rounds" if args.rounds > 1 else "") + "\n")
    print("Images/s (median ms per batch in parentheses); ratios are effnet over the peer.\n")
    print("| batch | effnet fp32 | effnet bf16 | ONNX Runtime | PyTorch eager "
          "| fp32/ORT | bf16/ORT | fp32/PyTorch | bf16/PyTorch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in batches:
        a, h, o, p = e32.get(b), e16.get(b), ort.get(b), pt.get(b)
        print(f"| {b} | {cell(a)} | {cell16(h)} | {cell(o)} | {cell(p)} "
              f"| {ratio(a, o)} | {ratio(h, o)} | {ratio(a, p)} | {ratio(h, p)} |")
    if not bf16_run:
        print(f"\neffnet bf16 was not run: effnet's oneDNN ISA here "
              f"({ecpu.get('isa') or 'n/a'}) has no native bf16 (AVX512_BF16 or AMX), "
              "where `effnet bench` refuses bf16 rather than emulate it slower than fp32.")

    print("\nStart-up, memory and spread (load = weights load/session create; "
          "build = effnet plan build for that batch size; RSS = process peak so far):\n")
    print("| runtime | batch | load ms | build ms | peak RSS MB | min ms | median ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in (("effnet fp32", e32), ("effnet bf16", e16 if bf16_run else None),
                       ("ONNX Runtime", ort), ("PyTorch eager", pt)):
        if rows is None:
            continue
        for b in batches:
            r = rows.get(b)
            if not r:
                print(f"| {name} | {b} | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            print(f"| {name} | {b} | {fmt(r.get('load_ms'), 0)} | {fmt(r.get('build_ms'), 0)} "
                  f"| {fmt(r.get('peak_rss_mb'), 0)} | {fmt(r.get('min_ms', r.get('ms_min')), 1)} "
                  f"| {fmt(r.get('ms_per_batch'), 1)} "
                  f"| {fmt(r.get('max_ms', r.get('ms_max')), 1)} |")

    model, isa = cpu_facts()
    flags = " ".join(isa) or "n/a"
    base = ecpu.get("isa") or "n/a"
    if ecpu.get("max_cpu_isa"):
        base += f", capped by DNNL_MAX_CPU_ISA={ecpu['max_cpu_isa']} from the environment"
    caps = read_caps(args.caps_cpu)
    if caps:
        capped_dir = args.capped_dir or os.path.dirname(os.path.abspath(args.caps_cpu))
        print("\n### effnet under DNNL_MAX_CPU_ISA caps\n")
        print("effnet again with oneDNN capped to an older ISA, in the same rotation as the "
              "other engines, to show what CPUs of that class would get. isa and layout are "
              "what effnet's plan used; /fp32 is over effnet fp32 without a cap "
              f"(isa {base}). ONNX Runtime cannot be capped: it ran uncapped on the full ISA "
              f"of this CPU ({model}; {flags}), so /ORT under a cap is NOT the ratio a CPU of "
              "that class would show against ONNX Runtime, which would be held to that ISA "
              "as well.\n")
        print("| cap | precision | batch | isa | layout | images/s | ms/batch | min ms "
              "| /fp32 | /ORT | kernels |")
        print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---|")
        unreachable, no_bf16 = [], []
        for c in caps:
            cap = c["max_cpu_isa"]
            if c.get("isa") != cap.lower():
                unreachable.append(f"{cap} (gives {c.get('isa') or 'n/a'})")
                continue
            precisions = ["fp32"]
            if c.get("bf16"):
                precisions.append("bf16")
            else:
                no_bf16.append(cap)
            for prec in precisions:
                rows = read_lines(os.path.join(capped_dir, f"effnet-{prec}@{cap}.jsonl"))
                for b in batches:
                    r = rows.get(b)
                    if not r:
                        print(f"| {cap} | {prec} | {b} | {c['isa']} | n/a | n/a | n/a | n/a "
                              "| n/a | n/a | n/a |")
                        continue
                    print(f"| {cap} | {prec} | {b} | {r.get('isa') or 'n/a'} "
                          f"| {r.get('layout') or 'n/a'} | {fmt(r.get('images_per_s'))} "
                          f"| {fmt(r.get('ms_per_batch'), 1)} "
                          f"| {fmt(r.get('min_ms', r.get('ms_min')), 1)} "
                          f"| {ratio(r, e32.get(b))} | {ratio(r, ort.get(b))} "
                          f"| {ref_kernels(r)} |")
        if no_bf16:
            print(f"\nbf16 not run under {', '.join(no_bf16)}: the CPU so capped has no "
                  "native bf16.")
        print(f"\nUnreachable caps (above this CPU's ISA, skipped): "
              f"{', '.join(unreachable) or 'none'}.")

    first = lambda rows, k: next((r.get(k) for r in rows.values() if r.get(k)), None)  # noqa: E731
    print("\nMachine and versions:\n")
    print(f"- CPU: {model}; {os.cpu_count()} logical CPUs; ISA flags: {flags}; "
          f"effnet's oneDNN ISA: {base}")
    print(f"- threads per runtime: {args.threads}; kernel {platform.release()}")
    if args.load_before or args.load_after:
        print(f"- load average before/after: {args.load_before} / {args.load_after}")
        try:
            busy = max(float(x.split()[0]) for x in (args.load_before, args.load_after) if x)
        except ValueError:
            busy = 0.0
        if busy > 0.5 + args.threads:
            print("- warning: other work was running on this machine; ratios are noisy, "
                  "see min/max above")
    print(f"- effnet: {args.effnet_version or 'n/a'}; oneDNN (libdnnl-dev): "
          f"{dpkg_version('libdnnl-dev') or 'n/a'}")
    print(f"- onnxruntime-node: {first(ort, 'version') or 'n/a'}"
          f" (node {args.node_version or 'n/a'})")
    print(f"- torch: {first(pt, 'version') or 'n/a'}"
          f" ({first(pt, 'onednn') or 'oneDNN n/a'}); torchvision: "
          f"{dpkg_version('python3-torchvision') or 'n/a'}")


if __name__ == "__main__":
    main()
