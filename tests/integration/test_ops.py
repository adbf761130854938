#!/usr/bin/python3
"""Operations test of effnetd: settings from the config file, environment and
flags (precedence, --print-config origins, --check-config errors with their
line), systemd notifications on a real NOTIFY_SOCKET (READY, STATUS,
WATCHDOG, RELOADING, STOPPING in order), socket activation through
systemd-socket-activate, drain on SIGTERM, SIGHUP reload under load and with
bad weights, logs (access lines, X-Request-Id, journald prefixes, JSON) and
/metrics (names, model info, `promtool check metrics`).

Usage: test_ops.py EFFNETD EFFNET   (meson passes both)
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, failures, finish  # noqa: E402

# A valid, non-default value for every setting (the test fails when a
# setting is added without one here, so every setting is exercised).
VALUES = {
    "weights": None,  # filled in with a real file
    "labels": None,
    "precision": "auto",
    "calibration": "/var/lib/effnetd/model.calib.json",  # unused: precision is not int8
    "padding": "symmetric",
    "bn-eps": "0.001",
    "hub-download-deadline": "5m",
    "listen": "127.0.0.1:9",
    "admin-listen": "127.0.0.1:10",
    "grpc-listen": "127.0.0.1:11",
    "grpc-max-streams": "5",
    "http-threads": "3",
    "max-connections": "77",
    "max-connections-per-client": "9",
    "connection-timeout": "2m",
    "body-timeout": "13",
    "header-timeout": "14",
    "decode-threads": "2",
    "decode-queue": "5",
    "retry-after": "4",
    "drain-timeout": "9",
    "max-batch": "6",
    "max-delay-ms": "3500us",
    "queue": "40",
    "workers": "2",
    "threads": "1",
    "deadline-ms": "1.234s",
    "watchdog-stall": "33",
    "max-body-bytes": "2000000",
    "memory-budget": "9000000",
    "max-client-share": "8500000",
    "max-body-total": "9000000",
    "max-answer-total": "3000000",
    "v2-max-body-bytes": "8000000",
    "max-images": "7",
    "max-pixels": "123456",
    "max-request-pixels": "234567",
    "jpeg-fast": "true",
    "access-log": "false",
    "log-format": "json",
    "otlp-endpoint": "https://collector.example:4318",
    "otlp-queue": "77",
    "ui": "false",
    "allowed-hosts": "api.example.com, .internal.example",
    "show-paths": "true",
    "model-control-mode": "explicit",
    "load-model": "b0,s",
    "repository-poll-secs": "8",
    "default-model": "b0",
    "api-keys-file": "/etc/effnetd/api-keys",
    "tls-cert": "/etc/effnetd/tls/server.crt",
    "tls-key": "/etc/effnetd/tls/server.key",
    "tls-client-ca": "/etc/effnetd/tls/clients.crt",
}
# Settings that cannot be set with the others at once: model-repository
# replaces weights (both set is an error, checked below).
APART = {"model-repository": "/srv/models"}

# How --print-config shows the values above that it writes in another form
# (durations in the setting's bare unit).
PRINTED = {"hub-download-deadline": "300", "connection-timeout": "120", "deadline-ms": "1234", "max-delay-ms": "3.5"}

# Values each setting must refuse.
BAD = {
    "precision": "fp64", "padding": "valid", "bn-eps": "0.5", "hub-download-deadline": "0", "http-threads": "65",
    "max-connections": "0", "max-connections-per-client": "-1", "connection-timeout": "-1", "body-timeout": "1d", "header-timeout": "3601",
    "decode-threads": "257", "decode-queue": "0", "retry-after": "1500ms", "drain-timeout": "3601",
    "max-batch": "257", "max-delay-ms": "nan", "queue": "0", "workers": "65", "threads": "1.5",
    "deadline-ms": "0", "watchdog-stall": "0", "max-body-bytes": "2G", "max-body-total": "0", "memory-budget": "0",
    "max-client-share": "-1", "max-answer-total": "0",
    "v2-max-body-bytes": "0",
    "max-images": "65537", "max-pixels": "-5", "max-request-pixels": "0", "jpeg-fast": "maybe", "access-log": "2", "ui": "sometimes",
    "show-paths": "perhaps", "allowed-hosts": "",
    "log-format": "xml", "weights": "", "labels": "", "listen": "", "admin-listen": "",
    "model-control-mode": "manual", "repository-poll-secs": "0", "load-model": "", "default-model": "",
    "model-repository": "",
    "grpc-listen": "", "grpc-max-streams": "0", "otlp-queue": "0",
}


def print_config(effnetd, args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EFFNETD_")}
    e.update(env or {})
    p = subprocess.run([effnetd, "--print-config"] + args, capture_output=True, text=True, env=e, timeout=30)
    settings = {}
    section = None
    for line in p.stdout.splitlines():
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^(#\s*)?([a-z0-9-]+) =\s?(.*?)\s+# (.+)$", line)
        if m:
            settings[m.group(2)] = (section, "" if m.group(1) else m.group(3), m.group(4))
    return p.returncode, settings, p.stderr


def check_config(effnetd, args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EFFNETD_")}
    e.update(env or {})
    p = subprocess.run([effnetd, "--check-config"] + args, capture_output=True, text=True, env=e, timeout=30)
    return p.returncode, p.stderr


def test_config(effnetd, weights, labels, workdir):
    values = dict(VALUES, weights=weights, labels=labels)
    shown = {k: PRINTED.get(k, str(v)) for k, v in values.items()}
    rc, defaults, err = print_config(effnetd, ["--config", "/nonexistent/none.conf"])
    check(rc == 2 and "/nonexistent/none.conf" in err, "--config of a missing file is an error")
    rc, defaults, err = print_config(effnetd, ["--weights", weights])
    check(rc == 0 and set(defaults) == set(VALUES) | set(APART),
          f"--print-config lists every setting ({sorted(defaults)})")
    rc, _, err = print_config(effnetd, ["--weights", weights, "--model-repository", workdir])
    check(rc == 2 and "set one of them" in err, f"weights and model-repository together are refused ({err.strip()})")
    rc, got, err = print_config(effnetd, ["--model-repository", workdir])
    check(rc == 0 and got["model-repository"][1] == workdir, "model-repository alone serves without weights")
    check(all(o in ("default", "unset") for k, (_, _, o) in defaults.items() if k != "weights"),
          "without a file, env or flags every other setting is a default")
    sections = {k: s for k, (s, _, _) in defaults.items() if k not in APART}

    # From the file: every setting, each with its line.
    conf = os.path.join(workdir, "all.conf")
    lines, where = ["# every setting", ""], {}
    for sec in dict.fromkeys(sections.values()):
        lines.append(f"[{sec}]")
        for k, s in sections.items():
            if s == sec:
                lines.append(f"{k} = {values[k]}")
                where[k] = len(lines)
        lines.append("")
    with open(conf, "w") as f:
        f.write("\n".join(lines))
    rc, got, err = print_config(effnetd, ["--config", conf])
    check(rc == 0 and all(got[k][1] == shown[k] and got[k][2] == f"{conf}:{where[k]}" for k in values),
          f"every setting from the file, with FILE:LINE as its origin ({err.strip()[:200]})")

    # From the environment, over the file.
    env = {"EFFNETD_" + k.upper().replace("-", "_"): str(v) for k, v in values.items()}
    rc, got, err = print_config(effnetd, [], env)
    check(rc == 0 and all(got[k][1] == shown[k] and got[k][2] == "EFFNETD_" + k.upper().replace("-", "_")
                          for k in values), f"every setting from the environment ({err.strip()[:200]})")
    # From flags.
    flags = []
    for k, v in values.items():
        flags += [f"--{k}={v}"] if v in ("true", "false") else [f"--{k}", str(v)]
    rc, got, err = print_config(effnetd, flags)
    check(rc == 0 and all(got[k][1] == shown[k] and got[k][2] == f"--{k}" for k in values),
          f"every setting from a flag ({err.strip()[:200]})")

    # Precedence: file < env < flag.
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {weights}\n[batching]\nqueue = 40\nmax-batch = 4\nworkers = 1\n")
    rc, got, _ = print_config(effnetd, ["--config", conf, "--max-batch", "2"],
                              {"EFFNETD_MAX_BATCH": "3", "EFFNETD_QUEUE": "50"})
    check(rc == 0 and got["max-batch"][1:] == ("2", "--max-batch") and got["queue"][1:] == ("50", "EFFNETD_QUEUE")
          and got["workers"][1:] == ("1", f"{conf}:6"), "precedence: file < environment < flag")
    rc, got, _ = print_config(effnetd, [], {"EFFNETD_CONFIG": conf})
    check(rc == 0 and got["queue"][2] == f"{conf}:4", "EFFNETD_CONFIG names the file")
    rc, got, _ = print_config(effnetd, ["--config", conf, "--max-body-bytes", "3M", "--max-body-total", "1G"])
    check(got.get("max-body-bytes", (0, 0))[1] == str(3 << 20), "sizes take k/M/G suffixes")

    # The shipped example is valid (its weights path need not exist here).
    example = os.path.join(SOURCE_ROOT, "etc", "effnetd.conf")
    rc, got, err = print_config(effnetd, ["--config", example])
    check(rc == 0 and got["weights"][2].startswith(example + ":")
          and all(got[k][1] == defaults[k][1] for k in got if k not in ("weights", "max-body-bytes",
                                                                       "max-body-total")),
          f"etc/effnetd.conf parses and states the defaults ({err.strip()[:200]})")
    rc, err = check_config(effnetd, ["--config", example, "--weights", weights])
    check(rc == 0 and "configuration OK" in err, f"--check-config accepts the example ({err.strip()[:200]})")
    rc, err = check_config(effnetd, ["--config", example])
    check(rc == 2 and "/var/lib/effnetd/model.safetensors" in err, "--check-config reports a missing weights file")

    # Every invalid value rejected with its line; all errors of a file at once.
    lines, want = ["[model]", f"weights = {weights}"], []
    for sec in dict.fromkeys(sections.values()):
        lines.append(f"[{sec}]")
        for k, s in sections.items():
            if s == sec and k in BAD:
                lines.append(f"{k} = {BAD[k]}")
                want.append((k, len(lines)))
    lines += ["[batching]", "no-such-key = 1", "[no-such-section]", "x = 1", "[server]", "just words",
              "max-batch = 4"]
    n = len(lines)
    want_extra = [(f"{conf}:{n - 5}: unknown key"), (f"{conf}:{n - 4}: unknown section"),
                  (f"{conf}:{n - 1}: expected key = value"), (f"{conf}:{n}: max-batch belongs in section [batching]")]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    rc, err = check_config(effnetd, ["--config", conf])
    missing = [k for k, ln in want if not re.search(rf"{re.escape(conf)}:{ln}: {re.escape(k)} ", err)]
    check(rc == 2 and not missing and all(w in err for w in want_extra),
          f"--check-config names every bad value and its line (missing {missing}; {err[:300]})")
    rc, err = check_config(effnetd, ["--weights", weights, "--queue", "4", "--max-images", "8"])
    check(rc == 2 and "max-images" in err and "--queue" in err, "cross-setting check names where values came from")
    rc, err = check_config(effnetd, ["--weights", weights, "--bogus", "1"])
    check(rc == 2 and "--bogus" in err, "unknown flag rejected")
    for k, v in BAD.items():
        rc, err = check_config(effnetd, ["--weights", weights], {"EFFNETD_" + k.upper().replace("-", "_"): v})
        if not check(rc == 2 and "EFFNETD_" + k.upper().replace("-", "_") in err, f"env {k}={v!r} rejected"):
            break
    # The daemon itself refuses to start on bad settings.
    p = subprocess.run([effnetd, "--weights", weights, "--max-batch", "0"], capture_output=True, text=True,
                       timeout=30)
    check(p.returncode == 2 and "max-batch" in p.stderr, "effnetd exits 2 on a bad setting")
    help_text = subprocess.run([effnetd, "--help"], capture_output=True, text=True, timeout=30).stdout
    check(all(f"--{k}" in help_text and "EFFNETD_" + k.upper().replace("-", "_") in help_text for k in VALUES),
          "--help lists every setting with its variable")


def test_systemd(effnetd, weights, weights2, workdir, jpeg):
    n = dm.Notify(os.path.join(workdir, "notify.sock"))
    conf = os.path.join(workdir, "reload.conf")
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {weights}\n")
    d = ConfDaemon(effnetd, conf, workdir, name="effnetd-notify", wait=False,
                   env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "2000000"})
    try:
        i_ready = n.wait_for("READY", "1")
        d.wait_listening()
        check(i_ready is not None and "listening on" in d.log_text(), "READY=1 once listening")
        st = n.messages[i_ready][1].get("STATUS", "") if i_ready is not None else ""
        check("efficientnetv2-b0" in st and "http://127.0.0.1:" in st, f"READY carries STATUS ({st})")
        # Before READY, STATUS= tells the warm-up's progress, step by step up
        # to all of them (each executor built, then run once).
        warm = [m["STATUS"] for _, m in n.messages[:i_ready or 0] if "warming up" in m.get("STATUS", "")]
        steps = [tuple(map(int, re.search(r"(\d+) of (\d+) executor steps", w).groups())) for w in warm]
        check(steps and steps[-1][0] == steps[-1][1] and steps[0][0] < steps[-1][0]
              and [a for a, _ in steps] == sorted(a for a, _ in steps),
              f"STATUS= shows the warm-up's progress before READY ({warm[:1]} ... {warm[-1:]})")
        check(re.search(r"warm-up: (\d+) of \1 executor steps done", d.log_text()) is not None,
              "the log says when the warm-up is done")
        s, _, _ = d.classify(jpeg)
        check(s == 200, "classify answers after READY")
        i_wd = n.wait_for("WATCHDOG", "1", after=(i_ready or 0) + 1, timeout=10)
        check(i_wd is not None, "WATCHDOG=1 keeps coming")
        i_rate = n.wait_for("STATUS", None, after=(i_ready or 0) + 1, timeout=15)
        rate = n.messages[i_rate][1]["STATUS"] if i_rate is not None else ""
        check(re.search(r"\d+ images, [\d.]+ images/s", rate) is not None, f"STATUS shows the rate ({rate})")

        with open(conf, "w") as f:
            f.write(f"[model]\nweights = {weights2}\n")
        mark = len(n.messages)
        d.proc.send_signal(1)
        i_rel = n.wait_for("RELOADING", "1", after=mark, timeout=30)
        mono = n.messages[i_rel][1].get("MONOTONIC_USEC", "") if i_rel is not None else ""
        now_us = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        check(i_rel is not None and mono.isdigit() and abs(int(mono) - now_us) < 60e6,
              f"SIGHUP: RELOADING=1 with MONOTONIC_USEC ({mono})")
        i_ready2 = n.wait_for("READY", "1", after=(i_rel or mark) + 1, timeout=300)
        st = n.messages[i_ready2][1].get("STATUS", "") if i_ready2 is not None else ""
        check(i_ready2 is not None and "efficientnetv2-b1" in st, f"READY=1 again after the reload ({st})")
        mark = len(n.messages)
        d.proc.send_signal(15)
        i_stop = n.wait_for("STOPPING", "1", after=mark, timeout=30)
        check(i_stop is not None and d.proc.wait(60) == 0, "SIGTERM: STOPPING=1, exit 0")
        order = [k for _, m in n.messages for k in ("READY", "RELOADING", "STOPPING") if k in m]
        check(order == ["READY", "RELOADING", "READY", "STOPPING"], f"notifications in order ({order})")
        wd = [t for t, m in n.messages if "WATCHDOG" in m]
        check(len(wd) >= 3 and max(b - a for a, b in zip(wd, wd[1:])) < 2.0,
              f"WATCHDOG=1 within the period ({len(wd)} keep-alives)")
    finally:
        if d.proc.poll() is None:
            d.stop()
        n.close()


def test_socket_activation(effnetd, weights, workdir):
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        check(False, "systemd-socket-activate is installed (package systemd)")
        return
    port = dm.free_port()
    log_path = os.path.join(workdir, "activate.log")
    with open(log_path, "wb") as log:
        # It passes no environment but what -E names: the sanitizers'
        # settings (suppressions) must reach the daemon.
        keep = [a for v in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS") if v in os.environ
                for a in ("-E", v)]
        p = subprocess.Popen([activate, "-l", f"127.0.0.1:{port}"] + keep + [effnetd, "--weights", weights,
                              "--listen", "127.0.0.1:1"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        # systemd-socket-activate starts effnetd on the first connection,
        # which waits in the backlog until the model is ready.
        deadline = time.monotonic() + 30
        while True:
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=300)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            data += b
        c.close()
        # The server answers as soon as it runs; its "listening on" line is
        # written just after.
        deadline = time.monotonic() + 10
        text = ""
        while "socket from systemd" not in text and time.monotonic() < deadline:
            text = open(log_path, "rb").read().decode(errors="replace")
            time.sleep(0.05)
        check(data.startswith(b"HTTP/1.1 200") and "socket from systemd" in text
              and f"127.0.0.1:{port}" in text, f"socket activation: served on the passed socket ({data[:40]!r})")
    finally:
        p.terminate()
        rc = p.wait(120)
        check(rc == 0, f"socket-activated effnetd exits 0 on SIGTERM ({rc})")


def test_drain(effnetd, weights, workdir, jpeg):
    """Requests in flight when SIGTERM arrives all get 200; /readyz turns 503
    at once and new work is refused with 503."""
    d = dm.Daemon(effnetd, weights, workdir, "--max-delay-ms", 1500, "--max-batch", 8, name="effnetd-drain")
    try:
        results = [None] * 6

        def one(i):
            results[i] = d.classify(jpeg)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while d.metrics().get("effnetd_queue_images", 0) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        d.proc.send_signal(15)
        time.sleep(0.2)
        s_ready, h_ready, _ = d.request("GET", "/readyz")
        s_new, h_new, b_new = d.classify(jpeg)
        for t in threads:
            t.join()
        rc = d.proc.wait(60)
        statuses = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
        check(statuses == [200] * 6, f"all 6 requests in flight at SIGTERM get 200 ({statuses})")
        check(s_ready == 503 and s_new == 503 and "retry-after" in h_new
              and b_new.get("error", {}).get("code") == "draining",
              f"draining: /readyz {s_ready} and new classify {s_new} {b_new} with Retry-After")
        check(rc == 0, f"exit 0 after the drain ({rc})")
    finally:
        if d.proc.poll() is None:
            d.stop()


def test_reload(effnetd, effnet, weights, weights2, workdir, jpeg):
    conf = os.path.join(workdir, "hup.conf")
    with open(conf, "w") as f:
        f.write(f"[model]\nweights = {weights}\n")
    # Started without --weights, so that the file decides what a reload loads.
    d = ConfDaemon(effnetd, conf, workdir, "--max-delay-ms", 5, name="effnetd-reload")
    try:
        s, _, b = d.request("GET", "/v1/models")
        m0 = dm.parse_json(b)["models"][0]
        check(m0["variant"] == "efficientnetv2-b0", "serving b0 before the reload")
        stop = threading.Event()
        statuses, models = [], set()

        def load():
            while not stop.is_set():
                try:
                    s, _, body = d.classify(jpeg, timeout=120)
                    statuses.append(s)
                    models.add(body.get("model"))
                except Exception as e:  # a lost request
                    statuses.append(repr(e))
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        with open(conf, "w") as f:
            f.write(f"[model]\nweights = {weights2}\n")
        d.proc.send_signal(1)
        deadline = time.monotonic() + 300
        while "reloaded" not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        check(len(statuses) > 10 and all(s == 200 for s in statuses),
              f"reload under load loses no request ({len(statuses)} requests, "
              f"{sorted(set(map(str, statuses)))})")
        check(models == {"efficientnetv2-b0", "efficientnetv2-b1"}, f"answers from both models ({models})")
        s, _, b = d.request("GET", "/v1/models")
        m1 = dm.parse_json(b)["models"][0]
        check(m1["variant"] == "efficientnetv2-b1" and m1["weights"]["file"] == os.path.basename(weights2)
              and m1["input_size"] == 240,
              "after the reload: the new variant and file")
        sha = hashlib.sha256(open(weights2, "rb").read()).hexdigest()
        _, _, mb = d.request("GET", "/metrics")
        check(f'weights_sha256="{sha}"' in mb.decode() and 'effnetd_reloads_total{result="ok"} 1' in mb.decode(),
              "metrics: the new weights' sha256, one reload")

        # Bad weights: keep serving the old model and say why.
        bad = os.path.join(workdir, "bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
        with open(conf, "w") as f:
            f.write(f"[model]\nweights = {bad}\n")
        d.proc.send_signal(1)
        deadline = time.monotonic() + 60
        while "reload failed" not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        s, _, body = d.classify(jpeg)
        check("reload failed" in d.log_text() and "bad.safetensors" in d.log_text(), "bad weights: the log says why")
        check(s == 200 and body.get("model") == "efficientnetv2-b1", "bad weights: the old model keeps serving")
        # A bad config file on reload: same.
        with open(conf, "w") as f:
            f.write("[model]\nweights = \nprecision = fp99\n")
        d.proc.send_signal(1)
        time.sleep(1.0)
        s, _, body = d.classify(jpeg)
        _, _, mb = d.request("GET", "/metrics")
        check(s == 200 and "fp99" in d.log_text() and 'effnetd_reloads_total{result="error"} 2' in mb.decode(),
              "bad settings on reload: old model serves, error logged and counted")
    finally:
        rc = d.stop()
        check(rc == 0, f"exit 0 after reloads ({rc})")
        if failures:
            print("---- reload log (tail) ----\n" + d.log_text()[-3000:])


def ConfDaemon(exe, conf, workdir, *args, name="effnetd-conf", env=None, wait=True):
    """effnetd started from a config file alone."""
    return dm.Daemon(exe, None, workdir, "--config", conf, *args, name=name, env=env, wait=wait)


def test_logs_metrics(effnetd, weights, workdir, jpeg):
    # journald: JOURNAL_STREAM names stderr's device and inode.
    log_path = os.path.join(workdir, "journal.log")
    open(log_path, "wb").close()
    st = os.stat(log_path)
    d = dm.Daemon(effnetd, weights, workdir, name="journal", env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                  wait=False)
    # dm.Daemon reopened the log file (same inode): wait for the prefixed line.
    deadline = time.monotonic() + 300
    while "listening on" not in d.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    d.port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", d.log_text()).group(1))
    try:
        s, h, _ = d.classify(jpeg)
        s2, h2, _ = d.request("GET", "/healthz", headers={"X-Request-Id": "abc-123.XYZ"})
        s3, h3, _ = d.request("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
        check(h2.get("x-request-id") == "abc-123.XYZ", "X-Request-Id from the client is echoed")
        check(re.fullmatch(r"[0-9a-f]{16}", h.get("x-request-id", "")) is not None
              and h3.get("x-request-id") not in (None, "bad id with spaces"), "requests without one get an id")
        text = d.log_text()
        lines = text.splitlines()
        check(all(re.match(r"^<\d>", ln) for ln in lines if ln), "under journald every line has a <prio> prefix")
        acc = [ln for ln in lines if "access" in ln and "/v1/classify" in ln]
        check(len(acc) == 1 and all(f in acc[0] for f in (f"id={h['x-request-id']}", "\"POST /v1/classify\" 200",
                                                          "bytes_in=", "bytes_out=", "images=1", "queue_ms=",
                                                          "inference_ms=", "batch=1")),
              f"one access line per request with its fields ({acc})")
        check(any("id=abc-123.XYZ" in ln for ln in lines), "access line carries the client's request id")

        # /metrics
        s, hdrs, body = d.request("GET", "/metrics")
        text = body.decode()
        names = ["effnetd_http_requests_total", "effnetd_http_request_duration_seconds_bucket",
                 "effnetd_queue_wait_seconds_bucket", "effnetd_inference_seconds_bucket",
                 "effnetd_batch_size_bucket", "effnetd_images_total", "effnetd_queue_images",
                 "effnetd_http_inflight_requests", "effnetd_model_info", "effnetd_build_info",
                 "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"]
        missing = [n for n in names if not re.search(rf"^{n}[{{ ]", text, re.M)]
        check(s == 200 and not missing, f"/metrics has every series (missing {missing})")
        sha = hashlib.sha256(open(weights, "rb").read()).hexdigest()
        info = re.search(r"^effnetd_model_info\{(.*)\} 1$", text, re.M)
        check(info is not None and 'variant="efficientnetv2-b0"' in info.group(1) and 'precision="fp32"' in
              info.group(1) and 'classes="1000"' in info.group(1) and f'weights_sha256="{sha}"' in info.group(1),
              "model info: variant, precision, classes, weights sha256")
        m = d.metrics()
        check(m.get('effnetd_queue_wait_seconds_count', 0) >= 1 and m.get('effnetd_inference_seconds_count', 0) >= 1
              and m.get("effnetd_images_total") == 1 and m.get("process_resident_memory_bytes", 0) > 1e6,
              "histograms and gauges count what happened")
        promtool = shutil.which("promtool")
        if check(promtool is not None, "promtool is installed (package prometheus)"):
            p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
            check(p.returncode == 0, f"promtool check metrics passes ({(p.stdout + p.stderr).decode()[:300]})")
    finally:
        d.stop()

    # JSON lines
    d = dm.Daemon(effnetd, weights, workdir, "--log-format", "json", name="json")
    try:
        d.classify(jpeg, query="?top_k=3")
        d.request("GET", "/nope", headers={"X-Request-Id": "json-1"})
    finally:
        d.stop()
    objs = []
    for ln in d.log_text().splitlines():
        try:
            objs.append(json.loads(ln))
        except ValueError:
            objs.append(None)
    check(objs and all(isinstance(o, dict) and {"ts", "level", "msg"} <= set(o) for o in objs),
          "log-format json: every line is an object with ts, level, msg")
    acc = [o for o in objs if o and o.get("msg") == "access"]
    check(len(acc) == 2 and acc[0]["status"] == 200 and acc[0]["images"] == 1 and acc[0]["batch_size"] == 1
          and acc[1]["status"] == 404 and acc[1]["request_id"] == "json-1" and acc[1]["error"] == "not_found",
          f"JSON access lines ({acc})")


SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    effnetd, effnet = dm.find_effnet_tools()
    photos = dm.sample_photos()
    if "grace_hopper.jpg" not in photos:
        sys.stderr.write("SKIP: sample photos missing (python3-matplotlib)\n")
        sys.exit(dm.SKIP)
    jpeg = dm.read(photos["grace_hopper.jpg"])
    with tempfile.TemporaryDirectory(prefix="effnetd-ops-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        weights2 = os.path.join(workdir, "b1.safetensors")
        labels = os.path.join(SOURCE_ROOT, "etc", "labels", "imagenet-1k.txt")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)
        subprocess.run([effnet, "init-weights", "--variant", "b1", "--seed", "2", "-o", weights2], check=True,
                       timeout=600)
        only = sys.argv[3:]
        if not only or "config" in only:
            test_config(effnetd, weights, labels, workdir)
        if not only or "logs" in only:
            test_logs_metrics(effnetd, weights, workdir, jpeg)
        if not only or "systemd" in only:
            test_systemd(effnetd, weights, weights2, workdir, jpeg)
        if not only or "socket" in only:
            test_socket_activation(effnetd, weights, workdir)
        if not only or "drain" in only:
            test_drain(effnetd, weights, workdir, jpeg)
        if not only or "reload" in only:
            test_reload(effnetd, effnet, weights, weights2, workdir, jpeg)
    finish()


if __name__ == "__main__":
    main()
