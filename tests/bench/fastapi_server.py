#!/usr/bin/python3
"""The Python peer of effnetd for tests/bench/serve-peers.sh: a FastAPI +
PyTorch + PIL server doing the same job the way a Python shop would write it.

    POST /v1/classify?top_k=5   body: one JPEG or PNG
      -> PIL decode, convert("RGB") -> Resize(384, bilinear) -> CenterCrop(384)
      -> ToTensor -> Normalize(ImageNet) -> torchvision efficientnet_v2_s
      -> softmax -> top-k
    answers {"model":"efficientnetv2-s","predictions":[{"index","label","score"},...]}
    GET /healthz

The weights are the safetensors file effnetd serves (torchvision tensor
names, e.g. from `effnet init-weights --variant s --scheme torchvision`),
read here with a few lines of numpy (python3-safetensors is not in Debian 12).

Concurrency: uvicorn's event loop reads the body, then decoding and
preprocessing run in Starlette's thread pool (PIL releases the GIL while it
decodes and resizes); the forward pass, one image at a time (no batching),
is serialized by a lock so that concurrent requests do not oversubscribe the
torch.set_num_threads(T) intra-op threads. --no-lock lets forwards overlap.

    /usr/bin/python3 tests/bench/fastapi_server.py --weights W.safetensors --port 8081 [--threads 2]
"""

import argparse
import io
import json
import os
import struct
import sys
import threading

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from torchvision import transforms as T
from torchvision.models import efficientnet_v2_s

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = 384
MAX_BODY = 10 * 1024 * 1024

_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path):
    """name -> torch.Tensor (float32): 8-byte LE header length, JSON header,
    raw little-endian data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            if info["dtype"] == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]]).astype(np.float32)
            out[name] = torch.from_numpy(a.reshape(info["shape"]).copy())
    return out


def load_model(path):
    tensors = read_safetensors(path)
    classes = tensors["classifier.1.weight"].shape[0]
    model = efficientnet_v2_s(weights=None, num_classes=classes)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{path}: missing {missing[:5]} unexpected {unexpected[:5]} "
                         "(torchvision efficientnet_v2_s names expected)")
    return model.eval(), classes


def error(status, code, message):
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def make_app(model, labels, precision, lock):
    app = FastAPI()
    transform = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(SIZE),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def preprocess(data):
        with Image.open(io.BytesIO(data)) as im:
            return transform(im.convert("RGB"))

    @torch.inference_mode()
    def forward(x):
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x.unsqueeze(0)).float()
        return model(x.unsqueeze(0))

    def infer(data, k):
        x = preprocess(data)
        if lock is not None:
            with lock:
                logits = forward(x)
        else:
            logits = forward(x)
        p = torch.softmax(logits[0].double(), 0)
        scores, idx = torch.topk(p, k)
        return [{"index": int(i), "label": labels[int(i)], "score": float(s)} for s, i in zip(scores, idx)]

    @app.post("/v1/classify")
    async def classify(request: Request, top_k: int = 5):
        if not 1 <= top_k <= len(labels):
            return error(400, "bad_top_k", f"top_k must be 1..{len(labels)}")
        data = await request.body()
        if not data:
            return error(400, "empty_body", "empty body")
        if len(data) > MAX_BODY:
            return error(413, "body_too_large", "body too large")
        try:
            preds = await run_in_threadpool(infer, data, top_k)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return error(400, "bad_image", str(e))
        return {"model": "efficientnetv2-s", "predictions": preds}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16 runs the forward under torch.autocast")
    ap.add_argument("--labels", default=os.path.join(ROOT, "etc", "labels", "imagenet-1k.txt"))
    ap.add_argument("--no-lock", action="store_true", help="let forward passes of requests overlap")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model, classes = load_model(args.weights)
    with open(args.labels) as f:
        labels = f.read().splitlines()
    if len(labels) != classes:
        labels = [str(i) for i in range(classes)]
    with torch.inference_mode():  # warm-up: the first forward pass allocates
        model(torch.zeros(1, 3, SIZE, SIZE))
    app = make_app(model, labels, args.precision, None if args.no_lock else threading.Lock())
    print(f"fastapi peer: torch {torch.__version__}, {args.threads} threads, {args.precision}, "
          f"listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
