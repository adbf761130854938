"""Progress of the effnet tool's long commands: on a terminal (script(1)
gives them one) init-weights and bench redraw one status line on stderr
and erase it when done; with stderr not a terminal they print nothing
there, so that scripts and logs stay clean.

Usage: test_cli_progress.py EFFNETD EFFNET"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import SKIP, check, finish  # noqa: E402

EFFNET = sys.argv[2]


def on_tty(args):
    """(exit status, what the terminal showed) of effnet ARGS under script(1)."""
    cmd = " ".join(shlex.quote(a) for a in [EFFNET] + args)
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=600)
    return p.returncode, p.stdout.decode(errors="replace")


def main():
    if not shutil.which("script"):
        print("SKIP: no script(1) (bsdutils) to give the commands a terminal")
        sys.exit(SKIP)
    with tempfile.TemporaryDirectory(prefix="effnet-progress-") as work:
        out = os.path.join(work, "b0.safetensors")
        init = ["init-weights", "--variant", "b0", "--seed", "1", "-o", out]
        p = subprocess.run([EFFNET] + init, capture_output=True, timeout=600)
        check(p.returncode == 0 and p.stderr == b"", f"init-weights: nothing on stderr off a terminal ({p.stderr[:80]!r})")
        rc, text = on_tty(init)
        lines = text.split("\r")
        check(rc == 0 and any("pass 1 of 2, calibrating block 1 of" in s for s in lines)
              and any("pass 2 of 2, calibrating block" in s for s in lines),
              f"init-weights: both passes' progress on a terminal ({lines[1:3]})")
        check(text.rstrip("\r\n").endswith("\x1b[K"), f"init-weights: the status line is erased at the end ({text[-40:]!r})")

        bench = ["bench", "--weights", out, "--batch", "1,2", "--runs", "3", "--warmup", "1", "--json"]
        p = subprocess.run([EFFNET] + bench, capture_output=True, timeout=600)
        check(p.returncode == 0 and p.stderr == b"" and p.stdout.count(b"\n") == 2,
              f"bench: only its results off a terminal ({p.stderr[:80]!r})")
        rc, text = on_tty(bench)
        check(rc == 0 and "bench: batch 1: building the executor" in text and "bench: batch 2: run 3 of 3" in text
              and "warm-up run 1 of 1" in text, "bench: each batch size's build, warm-up and runs on a terminal")
        results = [s for s in text.replace("\r", "\n").split("\n") if s.lstrip("\x1b[K").startswith("{")]
        check(len(results) == 2, f"bench: its results stay whole lines among the progress ({len(results)})")
    finish()


if __name__ == "__main__":
    main()
