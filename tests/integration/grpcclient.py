"""A KServe v2 gRPC client for tests that drive the real effnetd: Python
stubs generated at test time (Debian's python3-grpc-tools) from the tree's
own src/server/kserve.proto into a temporary folder, used through Debian's
python3-grpcio the way Triton's tritonclient.grpc uses them: inputs as
raw_input_contents (or typed contents), requested outputs with
"classification" as an int64 parameter, outputs read from
raw_output_contents.

    pb, stub = load(workdir, port)
    req = infer_request(pb, "efficientnetv2-b0", "FP32", x)          # numpy [N,3,H,W]
    probs = fp32_output(stub.ModelInfer(req, timeout=60))

A raw HTTP/2 client (RawH2) speaks the bytes itself, for the hostile tests
that a well-behaved client library cannot make: streams past the limit,
oversized headers, slow or silent clients.
"""

import importlib
import os
import socket
import struct
import subprocess
import sys

import numpy as np

PROTO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src", "server",
                     "kserve.proto")


def load(workdir, port, credentials=None):
    """(pb2 module, GRPCInferenceService stub on 127.0.0.1:port); with
    credentials (grpc.ssl_channel_credentials), over TLS."""
    import grpc
    out = os.path.join(workdir, "stubs")
    os.makedirs(out, exist_ok=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.dirname(PROTO), "--python_out=" + out,
                    "--grpc_python_out=" + out, PROTO], check=True, timeout=120)
    sys.path.insert(0, out)
    pb = importlib.import_module("kserve_pb2")
    pbg = importlib.import_module("kserve_pb2_grpc")
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 256 << 20)]
    if credentials is not None:
        channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    return pb, pbg.GRPCInferenceServiceStub(channel)


def infer_request(pb, model, datatype, data, raw=True, classification=0, request_id="", shape=None, version=""):
    """A ModelInferRequest: FP32 data is a float array [N,3,H,W], BYTES a
    list of encoded images; raw: raw_input_contents, else typed contents."""
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    inp = req.inputs.add()
    inp.name = "input"
    inp.datatype = datatype
    if shape is None:
        shape = list(data.shape) if datatype == "FP32" else [len(data)]
    inp.shape.extend(shape)
    if datatype == "FP32":
        if raw:
            req.raw_input_contents.append(np.ascontiguousarray(data, dtype="<f4").tobytes())
        else:
            inp.contents.fp32_contents.extend(np.asarray(data, dtype=np.float32).reshape(-1).tolist())
    else:
        if raw:
            req.raw_input_contents.append(b"".join(struct.pack("<I", len(b)) + b for b in data))
        else:
            inp.contents.bytes_contents.extend(data)
    out = req.outputs.add()
    out.name = "probabilities"
    if classification:
        out.parameters["classification"].int64_param = classification
    return req


def fp32_output(resp):
    o = resp.outputs[0]
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(list(o.shape))


def bytes_output(resp):
    raw, out, i = resp.raw_output_contents[0], [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


# ---- raw HTTP/2 ---------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 1, 4, 1


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(v, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if v < limit:
        return bytes([first | v])
    out = [first | limit]
    v -= limit
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman."""
    out = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v
    return out


def grpc_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra)


class RawH2:
    """One cleartext HTTP/2 connection with prior knowledge; frames read
    back as (type, flags, stream, payload)."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.started = False

    def start(self):
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.started = True

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, stream, headers, end_stream=False):
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, hpack(headers)))

    def message(self, stream, msg, end_stream=True):
        self.send(frame(DATA, END_STREAM if end_stream else 0, stream, b"\x00" + struct.pack(">I", len(msg)) + msg))

    def read_frame(self):
        """The next frame, or None when the server closed the connection."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7fffffff, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        if f[0] == SETTINGS and not f[1] & ACK and self.started:
            self.send(frame(SETTINGS, ACK, 0))
        return f

    def frames_until(self, pred, limit=200):
        """Frames read until pred(frame) is true (that one included) or the
        connection closed (then None is last)."""
        got = []
        for _ in range(limit):
            f = self.read_frame()
            got.append(f)
            if f is None or pred(f):
                break
        return got

    def close(self):
        self.sock.close()
