"""`zoo app`'s options and its port check, kept apart from gradio so that a mistake is reported in a blink."""

from __future__ import annotations

import argparse
import socket

from zoo.errors import VerbParser, ZooError, positive_int


def check_port_free(host: str, port: int) -> None:
    """One line instead of gradio's OSError traceback when another program holds the port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except (OSError, OverflowError) as err:
            if not 0 < port < 65536:
                raise ZooError(f"--port {port}: ports go from 1 to 65535") from err
            if (
                isinstance(err, socket.gaierror) or err.errno == 99
            ):  # unknown name, or not this machine's address
                raise ZooError(
                    f"--host {host}: not an address of this machine ({err.strerror or err})"
                ) from err
            raise ZooError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); another program (an app "
                "already running?) holds it: stop it or pick another port, e.g. --port "
                f"{port + 1}"
            ) from err


def parser() -> argparse.ArgumentParser:
    p = VerbParser(prog="zoo app", description="Gradio app: predictions and Grad-CAM for zoo models.")
    p.add_argument(
        "--checkpoint", action="append", required=True, help="a .ckpt/.safetensors/.onnx (repeat for several)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=positive_int, default=7860)
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    p.add_argument("--top-k", type=positive_int, default=5)
    return p
