#!/usr/bin/python3
"""Slow clients cannot take the probes down.

Usage: test_slowloris.py EFFNETD EFFNET

Debian's slowhttptest holds hundreds of connections open from 127.0.0.1,
trickling header lines (slowloris), for 20 s each run, against effnetd on
loopback:
  1. with the defaults, one address gets at most max-connections-per-client
     of them: /healthz from another address (127.0.0.2) keeps answering;
  2. with the per-client limit off and the attack filling max-connections,
     the admin listener (admin-listen) keeps answering /healthz, /readyz and
     /metrics, and serves nothing else (404 for /v1/classify there).
Each probe must answer within 3 s, as a kubelet probe would need.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

ATTACK_S = 20


def attack(port, connections):
    """slowhttptest in slowloris mode against /healthz, in the background."""
    return subprocess.Popen(["slowhttptest", "-c", str(connections), "-H", "-i", "5", "-r", "200", "-t", "GET",
                             "-u", f"http://127.0.0.1:{port}/healthz", "-x", "24", "-p", "3", "-l", str(ATTACK_S)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def probes_during(a, fn, rounds=5):
    time.sleep(4)   # let it open its connections
    got = []
    for _ in range(rounds):
        got.append(fn())
        time.sleep(2)
    a.wait(ATTACK_S + 30)
    return got


def main():
    effnetd, effnet = dm.find_effnet_tools()
    if not shutil.which("slowhttptest"):
        print("SKIP: slowhttptest not installed (Debian package slowhttptest)")
        sys.exit(dm.SKIP)
    with tempfile.TemporaryDirectory(prefix="effnetd-slow-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       timeout=600)

        d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 256, "--access-log=false",
                      name="per-client")
        try:
            a = attack(d.port, 400)
            got = probes_during(a, lambda: dm.get_status(d.port, "/healthz", "127.0.0.2"))
            check(all(g == 200 for g in got),
                  f"slowloris from 127.0.0.1 (400 connections): /healthz from 127.0.0.2 answers {got}")
        finally:
            d.stop()

        d = dm.Daemon(effnetd, weights, workdir, "--max-connections", 256, "--max-connections-per-client", 0,
                      "--admin-listen", "127.0.0.1:0", "--access-log=false", name="admin")
        try:
            admin = dm.admin_port(d)
            check(admin > 0, "the admin listener's address is logged")
            check(dm.get_status(admin, "/v1/classify") == 404 and dm.get_status(admin, "/v1/models") == 404,
                  "the admin listener serves no API routes")
            a = attack(d.port, 400)
            got = probes_during(a, lambda: (dm.get_status(admin, "/healthz"), dm.get_status(admin, "/readyz"),
                                            dm.get_status(admin, "/metrics"),
                                            dm.get_status(d.port, "/healthz", "127.0.0.2")))
            check(all(g[:3] == (200, 200, 200) for g in got),
                  f"slowloris filling the main listener: admin /healthz, /readyz, /metrics answer {[g[:3] for g in got]}")
            print(f"     the main listener from 127.0.0.2 meanwhile: {[g[3] for g in got]}")
            time.sleep(1)
            check(dm.get_status(d.port, "/healthz") == 200, "after the attack the main listener answers again")
        finally:
            d.stop()
    finish()


if __name__ == "__main__":
    main()
