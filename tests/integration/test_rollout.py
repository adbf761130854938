#!/usr/bin/python3
"""A rolling restart, a rolling reload and a crash behind a real load
balancer: three effnetd replicas on loopback behind Debian's HAProxy running
deploy/haproxy/haproxy.cfg as shipped (addresses from its environment
variables), under a steady load of classify requests for the whole test.

Phases, each with steady load before and after:
  drain   each replica in turn gets SIGTERM, drains, exits 0 and is started
          again; the next one goes only once HAProxy sees it up again
          (as a Deployment with maxUnavailable 0 would);
  reload  each replica in turn gets SIGHUP with its config file naming other
          weights (B0 seed 2 instead of seed 1): a version change;
  kill    one replica gets SIGKILL (a crash), then is started again.
The bar for drain and reload (and the steady windows): no failed request and
no answer other than 200. The kill phase is reported as it comes: requests
the killed replica held are retried by HAProxy (empty-response), requests
sent to it before the health check noticed are retried (conn-failure); what
can still be lost is an answer the replica had begun to send, or a body too
large for HAProxy's buffer (never retried). Timings are printed, never
judged.

Usage: test_rollout.py EFFNETD EFFNET [--clients N] [--settle SECONDS] [--default-retries] [--json FILE]
  (tests/bench/rollout.sh runs it with more clients and longer windows)
"""

import argparse
import csv
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAPROXY_CFG = os.path.join(SOURCE_ROOT, "deploy", "haproxy", "haproxy.cfg")
REPLICAS = 3
PLANNED = ("before", "drain", "after drain", "reload", "after reload")


class Replica:
    """One effnetd on fixed loopback ports (a restart must come back where
    the load balancer looks for it), settings from its own config file so
    that SIGHUP reloads the weights it names."""

    def __init__(self, name, exe, workdir, weights, args):
        self.name, self.exe, self.args = name, exe, args
        self.port, self.admin = dm.free_port(), dm.free_port()
        self.conf = os.path.join(workdir, f"{name}.conf")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.write_conf(weights)

    def write_conf(self, weights):
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"[model]\nweights = {weights}\n")
        os.rename(tmp, self.conf)

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.exe, "--config", self.conf, "--listen", f"127.0.0.1:{self.port}",
                                      "--admin-listen", f"127.0.0.1:{self.admin}"] + self.args,
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if dm.get_status(self.admin, "/readyz", timeout=2) == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.log_text()[-3000:]}")

    def weights(self):
        """The weights /v1/models says this replica serves."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", "/v1/models")
            return json.loads(c.getresponse().read())["models"][0]["weights"]
        finally:
            c.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class HAProxy:
    """haproxy -db with the shipped config; addresses through its
    environment variables; its runtime API socket for server states and
    retry counters."""

    def __init__(self, workdir, replicas, default_retries=False):
        self.port = dm.free_port()
        cfg = HAPROXY_CFG
        if default_retries:
            cfg = os.path.join(workdir, "haproxy-default-retries.cfg")
            text = open(HAPROXY_CFG).read()
            with open(cfg, "w") as f:
                f.write(re.sub(r"^(\s*)retry-on .*$", r"\1retry-on conn-failure", text, flags=re.M))
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.log_path = os.path.join(workdir, "haproxy.log")
        env = dict(os.environ, EFFNETD_LB_BIND=f"127.0.0.1:{self.port}", EFFNETD_LB_LOG="stderr",
                   EFFNETD_LB_SOCKET=self.sock)
        for i, r in enumerate(replicas, 1):
            env[f"EFFNETD_LB_SERVER{i}"] = f"127.0.0.1:{r.port}"
            env[f"EFFNETD_LB_ADMIN{i}"] = str(r.admin)
        p = subprocess.run(["haproxy", "-c", "-f", cfg], env=env, capture_output=True, text=True)
        check(p.returncode == 0, f"haproxy -c accepts deploy/haproxy/haproxy.cfg ({p.stdout.strip()}{p.stderr.strip()[-300:]})")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], env=env, stdout=log, stderr=log)

    def stat(self):
        """{server: row} of `show stat` for the effnetd backend (and
        'BACKEND')."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        finally:
            s.close()
        text = data.decode().lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("pxname") == "effnetd"}

    def wait_state(self, server, state, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.stat().get(server, {}).get("status", "").startswith(state):
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)   # soft stop: finish what is in flight
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Load:
    """N clients, each a keep-alive connection to HAProxy, POSTing one JPEG
    again and again. Every request is kept: (start, end, status or the name
    of the error, answer parsed with predictions)."""

    def __init__(self, port, image, clients):
        self.port, self.image = port, image
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self):
        conn = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            t0 = time.monotonic()
            try:
                conn.request("POST", "/v1/classify", body=self.image, headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                body = r.read()
                outcome = r.status
                if outcome == 200:
                    try:
                        ok = bool(json.loads(body).get("predictions"))
                    except ValueError:
                        ok = False
                    if not ok:
                        outcome = "bad-body"
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                outcome = type(e).__name__
                conn.close()
                conn = None
            with self.lock:
                self.records.append((t0, time.monotonic(), outcome))

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(90)


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def phase_of(record, row):
    return row["t0"] <= record[0] < row["t1"]


def summarize(records, phases, retries):
    """One row per phase: requests whose start falls in it."""
    rows = []
    for (name, t0, t1), retried in zip(phases, retries):
        rs = [r for r in records if t0 <= r[0] < t1]
        lat = [(e - s) * 1000 for s, e, o in rs if isinstance(o, int)]
        rows.append({
            "phase": name, "seconds": t1 - t0, "t0": t0, "t1": t1, "sent": len(rs),
            "200": sum(1 for r in rs if r[2] == 200),
            "503": sum(1 for r in rs if r[2] == 503),
            "other": sum(1 for r in rs if isinstance(r[2], int) and r[2] not in (200, 503)),
            "failed": sum(1 for r in rs if not isinstance(r[2], int)),
            "errors": sorted({str(r[2]) for r in rs if r[2] != 200}),
            "retried": retried, "p50": pct(lat, 50), "p99": pct(lat, 99),
        })
    return rows


def table(rows):
    """Markdown; latency also as a ratio to the steady phase before any
    change, measured in the same run."""
    base = rows[0]
    out = ["| phase | s | sent | 200 | 503 | other | failed | HAProxy retries | p50 ms | p99 ms | p50 / before | p99 / before |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['phase']} | {r['seconds']:.1f} | {r['sent']} | {r['200']} | {r['503']} | {r['other']} | "
                   f"{r['failed']} | {r['retried']} | {r['p50']:.0f} | {r['p99']:.0f} | "
                   f"{r['p50'] / base['p50']:.2f}x | {r['p99'] / base['p99']:.2f}x |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("effnetd")
    ap.add_argument("effnet")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of steady load around each phase")
    ap.add_argument("--default-retries", action="store_true",
                    help="a control: the shipped config with HAProxy's default retry-on (conn-failure only); "
                         "prints the table, requires nothing")
    ap.add_argument("--json", help="also append the table's rows to this file, one JSON object a line")
    opts = ap.parse_args()
    # meson's timeout sends SIGTERM: stop the replicas and HAProxy on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if not shutil.which("haproxy"):
        print("SKIP: needs haproxy (scripts/install-deps.sh installs it)")
        sys.exit(dm.SKIP)
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        print("SKIP: needs the sample photo of python3-matplotlib")
        sys.exit(dm.SKIP)
    image = dm.read(photos["grace_hopper.jpg"])

    with tempfile.TemporaryDirectory(prefix="effnetd-rollout-") as workdir:
        wa, wb = os.path.join(workdir, "b0-seed1.safetensors"), os.path.join(workdir, "b0-seed2.safetensors")
        for seed, path in ((1, wa), (2, wb)):
            subprocess.run([opts.effnet, "init-weights", "--variant", "b0", "--seed", str(seed), "-o", path],
                           check=True, timeout=600)
        # Small replicas: three of them share this machine's CPUs.
        args = ["--max-batch", "4", "--workers", "1", "--threads", "1", "--decode-threads", "1",
                "--http-threads", "1", "--drain-timeout", "10", "--access-log=false"]
        replicas = [Replica(f"r{i}", opts.effnetd, workdir, wa, args) for i in range(1, REPLICAS + 1)]
        lb = None
        load = None
        try:
            for r in replicas:
                r.start()
            for r in replicas:
                r.wait_ready()
            lb = HAProxy(workdir, replicas, opts.default_retries)
            check(all(lb.wait_state(r.name, "UP") for r in replicas), "HAProxy sees the 3 replicas up")
            load = Load(lb.port, image, opts.clients)
            load.start()
            phases, retries = [], []
            mark = [time.monotonic(), int(lb.stat()["BACKEND"]["wretr"] or 0)]

            def phase(name):
                now, total = time.monotonic(), int(lb.stat()["BACKEND"]["wretr"] or 0)
                phases.append((name, mark[0], now))
                retries.append(total - mark[1])
                mark[:] = [now, total]

            time.sleep(opts.settle)
            phase("before")

            # Rolling restart: SIGTERM, drain, exit, start again.
            for r in replicas:
                r.proc.send_signal(signal.SIGTERM)
                rc = r.proc.wait(120)
                check(rc == 0, f"{r.name}: drained and exited 0 after SIGTERM")
                r.start()
                r.wait_ready()
                check(lb.wait_state(r.name, "UP"), f"{r.name}: back up in HAProxy after its restart")
            phase("drain")
            time.sleep(opts.settle)
            phase("after drain")

            # Rolling reload to other weights.
            for r in replicas:
                before = r.weights()
                r.write_conf(wb)
                r.proc.send_signal(signal.SIGHUP)
                deadline, after = time.monotonic() + 300, before
                while time.monotonic() < deadline and after == before:
                    time.sleep(0.1)
                    after = r.weights()
                check(before.get("seed") == 1 and after.get("seed") == 2 and r.proc.poll() is None,
                      f"{r.name}: SIGHUP swapped the seed-1 weights for the seed-2 ones ({after.get('sha256', '')[:16]})")
            phase("reload")
            time.sleep(opts.settle)
            phase("after reload")

            # A crash: SIGKILL, the health check takes it out, then it is
            # started again.
            victim = replicas[1]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(60)
            check(lb.wait_state(victim.name, "DOWN"), f"{victim.name}: HAProxy marks the killed replica down")
            victim.start()
            victim.wait_ready()
            check(lb.wait_state(victim.name, "UP"), f"{victim.name}: back up after the crash")
            phase("kill")
            time.sleep(opts.settle)
            phase("after kill")
            load.stop()

            rows = summarize(load.records, phases, retries)
            print(f"\n{'HAProxy default retry-on (conn-failure): ' if opts.default_retries else ''}"
                  f"{opts.clients} clients, {REPLICAS} replicas (B0, max-batch 4, 1 thread each) behind "
                  f"HAProxy {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.split()[2]}:\n")
            print(table(rows) + "\n", flush=True)
            for r in rows:
                if r["errors"]:
                    kinds = {e: sum(1 for x in load.records if phase_of(x, r) and str(x[2]) == e) for e in r["errors"]}
                    print(f"{r['phase']}: not 200: {kinds}")
            if opts.json:
                with open(opts.json, "a") as f:
                    for r in rows:
                        f.write(json.dumps(dict(r, config="default-retries" if opts.default_retries else "shipped",
                                                clients=opts.clients)) + "\n")
            if opts.default_retries:
                # A control for the benchmark: what the careful retries save.
                rows = []
            for r in rows:
                if r["phase"] in PLANNED:
                    check(r["sent"] >= opts.clients and r["200"] == r["sent"],
                          f"{r['phase']}: {r['sent']} sent, all answered 200 (not: {r['errors']})")
                else:
                    check(r["sent"] > 0, f"{r['phase']}: {r['sent']} sent, {r['200']} answered 200, "
                                         f"{r['failed']} failed, {r['503']} 503 ({r['errors']})")
            if rows:
                after_kill = rows[-1]
                check(after_kill["200"] == after_kill["sent"] > 0, "after the crash every request is answered 200")
            served = [r.weights().get("seed") for r in replicas]
            check(served == [2] * REPLICAS, f"every replica serves the seed-2 weights at the end ({served})")
        finally:
            if load:
                load.stop()
            for r in replicas:
                if r.proc and r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
                    try:
                        r.proc.wait(60)
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
            if lb:
                lb.stop()
            if dm.failures:
                for r in replicas:
                    print(f"--- {r.name} log (tail)\n{r.log_text()[-2000:]}")
                if lb:
                    print(f"--- haproxy log (tail)\n{open(lb.log_path, errors='replace').read()[-4000:]}")
    finish()


if __name__ == "__main__":
    main()
