"""The image's HEALTHCHECK: does `zoo app` answer? A container that runs anything else has no app to check.

    python /app/docker/healthcheck.py [PID]

PID (default 1) is the container's command; when it is an init (`docker run --init`, compose's `init: true`)
its child is. When that command is `zoo app ...`, the app's page (GET http://127.0.0.1:PORT/, PORT from its
--port) must answer 200 within 5 s: exit 0, else 1 (still loading, hung, or gone). For any other command
(`zoo fit`, `zoo evaluate`, a shell) it exits 0 and says there is nothing to check: a training container is
healthy while its process runs, which Docker knows without a probe. Only the standard library: the image
has no curl.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

INITS = {"docker-init", "tini", "tini-static", "dumb-init", "catatonit"}
TIMEOUT_S = 5


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
        if ppid == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def container_command(pid: int) -> list[str]:
    """The command of PID, or of its first child when PID is an init."""
    argv = cmdline(pid)
    if argv and os.path.basename(argv[0]) in INITS:
        kids = children(pid)
        return cmdline(kids[0]) if kids else []
    return argv


def zoo_args(argv: list[str]) -> list[str] | None:
    """What follows `zoo` in a command line (`zoo app ...`, `python /usr/local/bin/zoo app ...`,
    `python -m zoo.cli app ...`); None when the command is not zoo."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "zoo":
            return argv[i + 1 :]
        if arg == "-m" and argv[i + 1 : i + 2] == ["zoo.cli"]:
            return argv[i + 2 :]
    return None


def app_url(argv: list[str]) -> str | None:
    """The URL of the page `zoo app` serves, from its own --host/--port; None when argv is not `zoo app`."""
    args = zoo_args(argv)
    if not args or args[0] != "app":
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    known, _ = parser.parse_known_args(args[1:])
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(known.host, known.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{known.port}/"


def main(argv: list[str]) -> int:
    pid = int(argv[0]) if argv else 1
    url = app_url(container_command(pid))
    if url is None:
        print("not `zoo app`: no app to check")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            ok = response.status == 200
            print(f"{url} answered {response.status}")
    except OSError as err:  # refused (still loading, or gone), timed out, or an HTTP error status
        print(f"{url} did not answer: {err}")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
