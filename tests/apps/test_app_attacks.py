"""`zoo app` under attack, over HTTP: hostile uploads, oversized files, path traversal, the bind address."""

from __future__ import annotations

import os
import struct
import tempfile
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.app_load import disagreement, memory_mb, reset_peak, serve, zoo_predict
from datamodules.images import list_images

pytestmark = pytest.mark.slow  # one `zoo app` process for the module: ~15 s to start

# Over the peak RSS before the attack set. Decoding the 100 MP bomb alone would take 100 MB (8-bit
# gray) and 300 MB more as RGB; the attack set measured ~5 MB here.
MAX_GROWTH_MB = 150


@pytest.fixture(scope="module")
def served(trained_ckpt, tmp_path_factory):
    from gradio_client import Client

    cwd = tmp_path_factory.mktemp("app")
    with serve(trained_ckpt, cwd) as (url, proc):
        yield url, proc, Client(url, verbose=False), cwd


@pytest.fixture(scope="module")
def good(trained_ckpt) -> Path:
    return list_images(trained_ckpt.parents[4] / "images" / "val")[0]


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grayscale PNG of zeros: a few hundred KB on disk, width x height bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)  # each row: filter byte + pixels
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def upload_raw(url: str, name: str, payload: bytes) -> tuple[int, bytes]:
    """POST a file to Gradio's upload route as a browser does, without gradio_client's own size check."""
    body = (f'--zoo\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + payload + b"\r\n--zoo--\r\n"  # fmt: skip
    request = urllib.request.Request(
        url + "gradio_api/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=zoo"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_hostile_uploads_get_a_clear_message_the_app_keeps_serving_and_memory_stays_bounded(
    served, good, tmp_path
):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    url, proc, client, _ = served
    (tmp_path / "notes.png").write_text("this is not an image")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "full.jpg"
    )
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    attacks = {
        tmp_path / "notes.png": "notes.png is not an image zoo can read: no image format recognised",
        tmp_path / "truncated.jpg": r"truncated.jpg could not be decoded: the file is damaged or truncated",
        # Pillow refuses this one from the header itself, over twice its limit.
        png_bomb(tmp_path / "bomb.png", 20_000, 20_000): r"image is over 179 MP, twice the 89 MP limit",
        # Between the limit and twice it Pillow only warns: zoo refuses it, with its size.
        png_bomb(
            tmp_path / "bomb100.png", 10_000, 10_000
        ): r"image is 10000×10000 = 100 MP, over the 89 MP limit",
    }
    assert (
        tmp_path / "bomb.png"
    ).stat().st_size < 1_000_000  # under the upload limit: it reaches the decoder
    assert client.predict(handle_file(str(good)), api_name="/predict")[
        "label"
    ]  # warm: first-call allocations
    before = memory_mb(proc.pid)["rss_mb"]
    reset_peak(proc.pid)
    for path, message in attacks.items():
        with pytest.raises(AppError, match=message) as caught:
            client.predict(handle_file(str(path)), api_name="/predict")
        assert "Traceback" not in str(caught.value) and "zoo-app-" not in str(caught.value)  # no server paths
        assert client.predict(handle_file(str(good)), api_name="/predict")["label"]  # still serving
    status, _ = upload_raw(url, "big.png", os.urandom(11 * 1024 * 1024))
    assert status == 413
    growth = memory_mb(proc.pid)["peak_rss_mb"] - before
    print(f"server RSS {before:.0f} MB before the attack set, peak growth {growth:.1f} MB")
    assert growth < MAX_GROWTH_MB


def test_files_over_10_mb_are_refused_by_the_server_and_the_client(served, good, tmp_path):
    from gradio_client import handle_file

    url, _, client, _ = served
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        client.predict(handle_file(str(big)), api_name="/predict")  # gradio_client checks before sending
    status, body = upload_raw(url, "big.png", big.read_bytes())  # a client that does not check
    assert status == 413 and b"File size exceeded maximum allowed size of 10485760 bytes" in body
    status, body = upload_raw(url, "small.png", good.read_bytes())
    assert status == 200  # the same route takes a file under the limit
    assert client.predict(handle_file(str(good)), api_name="/predict")["label"]


def test_odd_but_valid_images_are_predicted_as_zoo_predict_predicts_them(served, trained_ckpt, tmp_path):
    """1x1, CMYK, 16-bit and animated images take zoo's own decoding path, the one training used."""
    from gradio_client import handle_file

    _, _, client, _ = served
    rng = np.random.default_rng(1)

    def smooth() -> np.ndarray:  # (40, 40) uint8: a random 4x4 field, enlarged
        return np.asarray(Image.fromarray(rng.integers(0, 255, (4, 4), np.uint8)).resize((40, 40)))

    Image.new("RGB", (1, 1), (200, 40, 40)).save(tmp_path / "tiny.png")
    Image.fromarray(np.stack([smooth()] * 4, -1), mode="CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(smooth().astype(np.uint16) * 257).save(tmp_path / "deep.png")  # the full 16-bit range
    frames = [Image.fromarray(np.stack([smooth()] * 3, -1)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(tmp_path / "anim.gif") as gif:
        gif.convert("RGB").save(tmp_path / "first_frame.png")
    with Image.open(tmp_path / "deep.png") as deep, Image.open(tmp_path / "cmyk.jpg") as cmyk:
        assert deep.mode == "I;16" and cmyk.mode == "CMYK"
    files = [tmp_path / n for n in ("tiny.png", "cmyk.jpg", "deep.png", "anim.gif", "first_frame.png")]
    expected = zoo_predict(trained_ckpt, files, tmp_path)
    answers = {path.name: client.predict(handle_file(str(path)), api_name="/predict") for path in files}
    for path in files:
        assert disagreement(answers[path.name], expected[str(path)]) is None, path.name
    assert disagreement(answers["anim.gif"], expected[str(tmp_path / "first_frame.png")]) is None


def test_no_route_serves_files_the_app_did_not_create(served, trained_ckpt):
    url, _, _, cwd = served
    shared = (
        Path(tempfile.gettempdir()) / "gradio" / f"zoo-test-{uuid.uuid4().hex}"
    )  # Gradio's default folder
    shared.mkdir(parents=True)
    (shared / "secret.txt").write_text("planted by another program")
    val_image = list_images(trained_ckpt.parents[4] / "images" / "val")[0]
    probes = {
        "gradio_api/file=/etc/passwd": b"root:",
        "file=/etc/passwd": b"root:",
        "gradio_api/file=../../../../../etc/passwd": b"root:",
        "gradio_api/file=..%2f..%2f..%2f..%2f..%2fetc%2fpasswd": b"root:",
        "gradio_api/file=%2fetc%2fpasswd": b"root:",
        "file=../../../../../etc/passwd": b"root:",
        "static/../../../../../etc/passwd": b"root:",
        "assets/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd": b"root:",
        "gradio_api/file=/proc/self/environ": b"PATH=",
        f"gradio_api/file={trained_ckpt}": trained_ckpt.read_bytes()[:64],  # the model itself
        f"gradio_api/file={cwd / next(cwd.glob('app_*.log')).name}": b"",  # a file in the app's cwd
        f"gradio_api/file={val_image}": val_image.read_bytes(),  # an example, at its own path
        f"gradio_api/file={shared / 'secret.txt'}": b"planted",
    }
    try:
        for probe, content in probes.items():
            status, body = get(url + probe)
            assert status in (403, 404), (probe, status)
            assert not content or content not in body, probe
    finally:
        (shared / "secret.txt").unlink()
        shared.rmdir()


def test_the_examples_are_served_from_the_apps_own_copies(served, trained_ckpt):
    import json
    import re

    url, *_ = served
    status, config = get(url + "config")
    assert status == 200
    served_files = re.findall(
        r'"url": "(http://127\.0\.0\.1:\d+/gradio_api/file=[^"]+)"', json.dumps(json.loads(config))
    )
    val = {p.read_bytes() for p in list_images(trained_ckpt.parents[4] / "images" / "val")}
    examples = [u for u in served_files if Path(u).suffix == ".png"]
    assert len(examples) >= 3
    for example in examples:
        assert "zoo-app-" in example  # copied into the app's private upload folder
        status, body = get(example)
        assert status == 200 and body in val


def test_the_app_listens_on_localhost_only_by_default(served):
    import inspect

    from apps.gradio_app import launch
    from apps.serving import parser

    url, *_ = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if int(local_port, 16) == port and state == "0A":  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex; nothing on 0.0.0.0 or IPv6
    assert parser().parse_args(["--checkpoint", "m.ckpt"]).host == "127.0.0.1"
    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
