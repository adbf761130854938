#!/usr/bin/python3
"""Hostile weight files through `effnet inspect`: each must be refused with a
message that names the file or tensor and the problem, and never crash.

Usage: hostile_weights.py EFFNET_BINARY
Exits 0 on success, 1 on failure, 77 (skip) if the binary does not exist.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile

STEM = "conv_stem.weight"
STEM_SHAPE = [24, 3, 3, 3]
STEM_BYTES = 24 * 3 * 3 * 3 * 4

# Output of a sanitizer that found a bug but let the process exit normally.
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors(header, data, header_len=None):
    """A file as the format lays it out; header_len overrides the length field."""
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    n = len(raw) if header_len is None else header_len
    return struct.pack("<Q", n) + raw + data


def cases():
    """(name, bytes, words naming the thing at fault, words naming the problem).

    A message passes if it contains any word of the first list (or the file
    path) and any word of the second; an empty second list accepts any message.
    """
    stem = {STEM: tensor("F32", STEM_SHAPE, 0, STEM_BYTES)}
    valid = safetensors(stem, bytes(STEM_BYTES))
    return [
        ("empty", b"", [], ["short", "empty", "header"]),
        ("short", b"\x10\x00\x00", [], ["short", "header"]),
        ("truncated", valid[: len(valid) - 100], [STEM], ["exceed", "data area", "truncat"]),
        ("truncated-header", valid[:20], [], ["header length", "past", "truncat"]),
        ("header-past-eof", safetensors(stem, bytes(STEM_BYTES), header_len=1 << 40), [], ["header length"]),
        ("bad-json", safetensors(b'{"conv_stem.weight":{"dtype":"F32",', bytes(64)), [], ["json"]),
        ("not-object", safetensors(b"[1,2,3]", b""), [], ["json object", "not an object"]),
        ("overlap",
         safetensors({STEM: tensor("F32", STEM_SHAPE, 0, STEM_BYTES),
                      "bn1.weight": tensor("F32", [24], 64, 64 + 96)}, bytes(STEM_BYTES)),
         [STEM, "bn1.weight"], ["overlap"]),
        ("out-of-range",
         safetensors({STEM: tensor("F32", STEM_SHAPE, 0, STEM_BYTES)}, bytes(64)),
         [STEM], ["exceed", "out of range", "data area"]),
        ("size-mismatch",
         safetensors({STEM: tensor("F32", STEM_SHAPE, 0, STEM_BYTES - 4)}, bytes(STEM_BYTES)),
         [STEM], ["span", "bytes", "size"]),
        ("duplicate-key",
         safetensors(b'{"conv_stem.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                     b'"conv_stem.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
         [STEM], ["duplicate"]),
        ("numel-overflow",
         safetensors({STEM: tensor("F32", [1 << 32, 1 << 32, 4], 0, 0)}, b""),
         [STEM], ["overflow"]),
        # Valid as a file, wrong for the model: the loader reports these.
        ("i64-conv", safetensors({STEM: tensor("I64", STEM_SHAPE, 0, STEM_BYTES * 2)}, bytes(STEM_BYTES * 2)),
         [STEM], []),
        ("wrong-shape",
         safetensors({STEM: tensor("F32", STEM_SHAPE, 0, STEM_BYTES),
                      "bn1.weight": tensor("F32", [7], STEM_BYTES, STEM_BYTES + 28)}, bytes(STEM_BYTES + 28)),
         [STEM, "bn1.weight"], []),
    ]


def check(effnet, path, data, names, problems):
    """Returns a list of complaints (empty if the case passed)."""
    with open(path, "wb") as f:
        f.write(data)
    try:
        p = subprocess.run([effnet, "inspect", path], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return ["timed out"]
    err = p.stderr.decode("utf-8", "replace")
    bad = []
    if p.returncode < 0:
        bad.append("killed by signal %s" % signal.Signals(-p.returncode).name)
    elif p.returncode == 0:
        bad.append("accepted (exit 0)")
    elif p.returncode >= 128:
        bad.append("exit %d looks like a signal" % p.returncode)
    if any(m in err for m in SANITIZER_MARKS):
        bad.append("sanitizer report")
    if not err.strip():
        bad.append("empty stderr")
    low = err.lower()
    if not any(w in err for w in [os.path.basename(path)] + names):
        bad.append("stderr names neither the file nor %s" % (names or "the tensor"))
    if problems and not any(w.lower() in low for w in problems):
        bad.append("stderr does not name the problem (any of %s)" % problems)
    if bad:
        bad.append("stderr: %s" % err.strip()[:500])
    return bad


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    effnet = sys.argv[1]
    if not os.access(effnet, os.X_OK):
        print("skip: %s is not an executable" % effnet, file=sys.stderr)
        return 77
    failed = 0
    with tempfile.TemporaryDirectory(prefix="hostile_weights.") as tmp:
        for name, data, names, problems in cases():
            path = os.path.join(tmp, name + ".safetensors")
            bad = check(effnet, path, data, names, problems)
            print("%-18s %s" % (name, "ok" if not bad else "FAIL: " + "; ".join(bad)))
            failed += bool(bad)
    if failed:
        print("%d case(s) failed" % failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
