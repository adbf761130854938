#!/usr/bin/python3
"""deploy/systemd/: `systemd-analyze verify` accepts effnetd.service (from
its template effnetd.service.in, with ExecStart pointing at the built
effnetd as meson install writes the installed one) and effnetd.socket, the service
is Type=notify with a watchdog and the hardening the docs promise, its
`systemd-analyze security --offline` exposure stays low, and the socket
listens on the daemon's default address.

Usage: test_systemd_units.py EFFNETD EFFNET
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as dm  # noqa: E402
from daemon import check, finish  # noqa: E402

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(SOURCE_ROOT, "deploy", "systemd")
MAX_EXPOSURE = 2.0


def main():
    effnetd, _ = dm.find_effnet_tools()
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("SKIP: systemd-analyze missing (package systemd)")
        sys.exit(dm.SKIP)
    template = open(os.path.join(UNITS, "effnetd.service.in")).read()
    check("ExecStart=@sbindir@/effnetd --config @sysconfdir@/effnetd/effnetd.conf" in template,
          "the template's ExecStart takes the installed paths")
    service = template.replace("@sbindir@/effnetd", os.path.abspath(effnetd)).replace("@sysconfdir@", "/etc")
    check(re.search(r"@\w+@", service) is None, "every placeholder of the template is known")
    socket_unit = open(os.path.join(UNITS, "effnetd.socket")).read()
    settings = dict(re.findall(r"^(\w+)=(.*)$", service, re.M))
    for key, want in {"Type": "notify", "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                      "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": ""}.items():
        check(settings.get(key) == want, f"{key}={want}")
    check("SystemCallFilter=@system-service" in service and "WatchdogSec=" in service
          and "ExecReload=/bin/kill -HUP $MAINPID" in service, "system-call filter, watchdog, reload by SIGHUP")
    check(re.search(r"^#.*MemoryDenyWriteExecute", service, re.M) is not None
          and not re.search(r"^MemoryDenyWriteExecute", service, re.M),
          "MemoryDenyWriteExecute left out, with the reason (oneDNN's JIT)")
    stop = int(re.sub(r"\D", "", settings.get("TimeoutStopSec", "0")))
    conf = subprocess.run([effnetd, "--print-config", "--weights", "x"], capture_output=True, text=True).stdout
    drain = int(re.search(r"^drain-timeout = (\d+)", conf, re.M).group(1))
    listen = re.search(r"^listen = (\S+)", conf, re.M).group(1)
    check(stop > drain, f"TimeoutStopSec {stop} s > drain-timeout {drain} s")
    check(f"ListenStream={listen}" in socket_unit, f"effnetd.socket listens on the default {listen}")

    with tempfile.TemporaryDirectory(prefix="effnetd-units-") as d:
        with open(os.path.join(d, "effnetd.service"), "w") as f:
            f.write(service)
        shutil.copy(os.path.join(UNITS, "effnetd.socket"), d)
        p = subprocess.run([analyze, "verify", os.path.join(d, "effnetd.service"), os.path.join(d, "effnetd.socket")],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and not p.stderr.strip(), f"systemd-analyze verify is clean ({p.stderr.strip()[:300]})")
        p = subprocess.run([analyze, "security", "--offline=true", os.path.join(d, "effnetd.service")],
                           capture_output=True, text=True, timeout=120)
        m = re.search(r"Overall exposure level for effnetd.service: ([\d.]+)", p.stdout)
        if m:
            check(float(m.group(1)) <= MAX_EXPOSURE, f"systemd-analyze security exposure {m.group(1)} <= {MAX_EXPOSURE}")
        else:
            print(f"note: systemd-analyze security --offline unavailable here ({p.stderr.strip()[:120]})")
    finish()


if __name__ == "__main__":
    main()
