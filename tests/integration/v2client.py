"""A small KServe v2 / Open Inference Protocol client over HTTP, written from
the specs (kserve's required_api.md, Triton's binary tensor data and
classification extensions), for tests that drive the real effnetd. It does
what Triton's tritonclient.http does on the wire: no Content-Type on infer
requests, lower-case header names, one keep-alive connection, binary input
data by default.

    c = V2Client(port)
    status, headers, body = c.get("/v2/health/ready")
    res = c.infer("efficientnetv2-b0", [Tensor("input", "FP32", x)],
                  outputs=[Output("probabilities", binary=True, classification=5)])
    res.status, res.json, res.output("probabilities")   # numpy array or list of bytes
"""

import http.client
import json
import struct
import urllib.parse

import numpy as np


class Tensor:
    """An input: name, datatype ("FP32" or "BYTES"), data (a numpy float
    array, or a list of bytes objects for BYTES); binary: sent after the
    JSON (binary tensor data extension) rather than in it."""

    def __init__(self, name, datatype, data, binary=True, shape=None, nested=False):
        self.name, self.datatype, self.data, self.binary, self.nested = name, datatype, data, binary, nested
        if shape is None:
            shape = list(data.shape) if datatype != "BYTES" else [len(data)]
        self.shape = shape

    def raw(self):
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(b)) + b for b in self.data)
        return np.ascontiguousarray(self.data, dtype="<f4").tobytes()

    def json(self):
        t = {"name": self.name, "shape": self.shape, "datatype": self.datatype}
        if self.binary:
            t["parameters"] = {"binary_data_size": len(self.raw())}
        elif self.datatype == "BYTES":
            import base64
            t["data"] = [base64.b64encode(b).decode() for b in self.data]
        else:
            a = np.asarray(self.data, dtype=np.float32)
            t["data"] = a.tolist() if self.nested else a.reshape(-1).tolist()
        return t


class Output:
    """A requested output: binary (None: not said), classification (0: none)."""

    def __init__(self, name, binary=None, classification=0):
        self.name, self.binary, self.classification = name, binary, classification

    def json(self):
        o = {"name": self.name}
        params = {}
        if self.binary is not None:
            params["binary_data"] = self.binary
        if self.classification:
            params["classification"] = self.classification
        if params:
            o["parameters"] = params
        return o


def encode_request(inputs, outputs=None, request_id=None, parameters=None):
    """(body, Inference-Header-Content-Length or None)."""
    req = {"inputs": [t.json() for t in inputs]}
    if request_id is not None:
        req["id"] = request_id
    if outputs is not None:
        req["outputs"] = [o.json() for o in outputs]
    if parameters:
        req["parameters"] = parameters
    head = json.dumps(req).encode()
    raw = [t.raw() for t in inputs if t.binary]
    if not raw:
        return head, None
    return head + b"".join(raw), len(head)


class Result:
    """An infer answer: status, headers, json (the header object), and
    each output's data from JSON or from the binary part."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body
        hl = headers.get("inference-header-content-length")
        self.header_len = int(hl) if hl is not None else None
        head = body[: self.header_len] if hl is not None else body
        try:
            self.json = json.loads(head)
        except ValueError:
            self.json = {"_unparsed": head[:200]}
        self.binary = body[self.header_len:] if hl is not None else b""

    def error(self):
        return self.json.get("error") if isinstance(self.json, dict) else None

    def output(self, name):
        """FP32: numpy array of its shape; BYTES: list of bytes, flat."""
        off = 0
        for o in self.json.get("outputs", []):
            size = o.get("parameters", {}).get("binary_data_size")
            if o["name"] != name:
                off += size or 0
                continue
            if size is None:
                if o["datatype"] == "BYTES":
                    return [s.encode() for s in o["data"]]
                return np.array(o["data"], dtype=np.float32).reshape(o["shape"])
            raw = self.binary[off:off + size]
            if o["datatype"] == "BYTES":
                out, i = [], 0
                while i < len(raw):
                    (n,) = struct.unpack_from("<I", raw, i)
                    out.append(raw[i + 4:i + 4 + n])
                    i += 4 + n
                return out
            return np.frombuffer(raw, dtype="<f4").reshape(o["shape"])
        return None


class RepositoryError(Exception):
    """A repository call that did not answer 200 (tritonclient raises
    InferenceServerException with the same message)."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class V2Client:
    def __init__(self, port, timeout=120):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.connections = 0

    def close(self):
        self.conn.close()

    def request(self, method, path, body=None, headers=None):
        """(status, headers with lower-case names, body) on the kept-alive
        connection (reopened when the server closed it)."""
        for attempt in (0, 1):
            try:
                if self.conn.sock is None:
                    self.connections += 1
                try:
                    self.conn.request(method, path, body=body, headers=headers or {})
                except (BrokenPipeError, ConnectionResetError):
                    # The server answered early (413) and closed while the body
                    # was still going out: its answer is there to read.
                    pass
                r = self.conn.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.conn.close()
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise

    def get(self, path):
        s, h, b = self.request("GET", path)
        try:
            j = json.loads(b) if b else None
        except ValueError:
            j = {"_unparsed": b[:200]}
        return s, h, j

    # Triton's model repository extension, as tritonclient.http's
    # get_model_repository_index, load_model and unload_model send it: POST,
    # a JSON body (empty for the index), the model name quoted; a status
    # other than 200 raises with the server's {"error": ...} message.

    def _repository(self, path, body):
        s, h, b = self.request("POST", path, body.encode())
        if s != 200:
            try:
                msg = json.loads(b)["error"]
            except (ValueError, KeyError, TypeError):
                msg = b[:200]
            raise RepositoryError(s, msg)
        return b

    def get_model_repository_index(self):
        return json.loads(self._repository("/v2/repository/index", ""))

    def load_model(self, model_name, config=None):
        load_request = {}
        if config is not None:
            load_request.setdefault("parameters", {})["config"] = config
        self._repository(f"/v2/repository/models/{urllib.parse.quote(model_name)}/load", json.dumps(load_request))

    def unload_model(self, model_name, unload_dependents=False):
        unload_request = {"parameters": {"unload_dependents": unload_dependents}}
        self._repository(f"/v2/repository/models/{urllib.parse.quote(model_name)}/unload",
                         json.dumps(unload_request))

    def infer(self, model, inputs, outputs=None, request_id=None, parameters=None, version=None, headers=None):
        body, hl = encode_request(inputs, outputs, request_id, parameters)
        h = dict(headers or {})
        if hl is not None:
            h["inference-header-content-length"] = str(hl)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return Result(*self.request("POST", path, body, h))
