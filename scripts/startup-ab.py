#!/usr/bin/env python3
"""Start-up of two tollgate builds, alternated in one run.

    scripts/startup-ab.py OLD_BINARY NEW_BINARY [RUNS]

Writes 1,000 spec files (copies of tool-specs/echo.yaml, as `bench-proof.sh
startup` does) to a temporary directory, then times each binary RUNS times
(default 15), alternating OLD and NEW so that both see the same noise:

- `tollgate check`, spawn to exit;
- `tollgate serve --http` on a database that knows the 1,000 versions,
  spawn until `/readyz` answers 200 (a restart);
- the same on a database path that does not exist yet (a first start).

Prints the median and range of each, in milliseconds, and NEW/OLD.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(work, db):
    return [
        "--specs", os.path.join(work, "specs"),
        "--principals", os.path.join(ROOT, "principals.yaml"),
        "--policies", os.path.join(work, "policies"),
        "--db", db,
    ]


def time_check(binary, work):
    started = time.perf_counter()
    out = subprocess.run([binary, *args(work, os.path.join(work, "check.db")), "check"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = (time.perf_counter() - started) * 1e3
    if out.returncode != 0:
        sys.exit(f"{binary} check failed: {out.stderr.decode()[-2000:]}")
    return took


def time_serve(binary, work, db):
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    env = dict(os.environ, TOLLGATE_LOG="warn")
    started = time.perf_counter()
    child = subprocess.Popen([binary, *args(work, db), "serve", "--http", f"127.0.0.1:{port}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            if child.poll() is not None:
                sys.exit(f"{binary} serve exited with {child.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return (time.perf_counter() - started) * 1e3
            except OSError:
                pass
            if time.perf_counter() - started > 30:
                sys.exit(f"{binary} serve was not ready within 30 s")
            time.sleep(0.001)
    finally:
        child.kill()
        child.wait()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binaries = {"old": sys.argv[1], "new": sys.argv[2]}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    work = tempfile.mkdtemp(prefix="tollgate-startup-")
    try:
        os.mkdir(os.path.join(work, "specs"))
        os.mkdir(os.path.join(work, "policies"))
        with open(os.path.join(ROOT, "tool-specs", "echo.yaml")) as f:
            echo = f.read()
        for i in range(SPECS):
            text = echo.replace("name: echo", f"name: echo_{i:04}").replace(
                "title: Echo", f"title: Echo {i}")
            with open(os.path.join(work, "specs", f"echo_{i:04}.yaml"), "w") as f:
                f.write(text)
        results = {(b, what): [] for b in binaries for what in ("check", "restart", "first")}
        for name, binary in binaries.items():
            # Untimed: registers the versions, warms the page cache.
            time_serve(binary, work, os.path.join(work, f"{name}.db"))
        for run in range(runs):
            for name, binary in binaries.items():
                results[(name, "check")].append(time_check(binary, work))
                results[(name, "restart")].append(
                    time_serve(binary, work, os.path.join(work, f"{name}.db")))
                fresh = os.path.join(work, f"fresh-{name}-{run}.db")
                results[(name, "first")].append(time_serve(binary, work, fresh))
            print(f"run {run + 1}/{runs}", file=sys.stderr)
        print("| what | old median ms (range) | new median ms (range) | new/old |")
        print("|---|---|---|---|")
        labels = {
            "check": "`tollgate check`",
            "restart": "`serve --http` to `/readyz`, versions known",
            "first": "`serve --http` to `/readyz`, first start",
        }
        for what, label in labels.items():
            old, new = results[("old", what)], results[("new", what)]
            mo, mn = statistics.median(old), statistics.median(new)
            print(f"| {label} | {mo:.1f} ({min(old):.0f}–{max(old):.0f}) | "
                  f"{mn:.1f} ({min(new):.0f}–{max(new):.0f}) | {mn / mo:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
