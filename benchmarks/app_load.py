"""The app under load: many concurrent users of `zoo app`'s HTTP API, checked against `zoo predict`.

    python -m benchmarks.app_load [--clients 50] [--requests 10] [--sweep 1 4 8]

Trains the CNN recipe for one short epoch on the bundled sample, starts `zoo app` as a user does (a
subprocess on localhost), and has `--clients` gradio_client users, each on its own thread, send
`--requests` predictions each, over the sample's validation images. Every answer must equal what
`zoo predict` says for the same image (top-1 label, and each top-k score within 1e-5), with no errors.
Reports each request's latency as the client sees it (upload + queue + prediction), p50/p95, the
throughput, and the server's peak resident memory (VmHWM). The same load is then served with each
`--sweep` number of predictions at once (`zoo app` uses apps.gradio_app.PREDICT_CONCURRENCY).
The clients run on the same machine as the server, and share its cores.
Writes benchmarks/results/app_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import zoo
from benchmarks.machine import describe
from datamodules.folder import sample_root
from datamodules.images import list_images

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(
    checkpoint: Path, cwd: Path, port: int | None = None, concurrency: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`zoo app --checkpoint CHECKPOINT --port PORT` in a subprocess; yields (its URL, the process) once it answers.

    `concurrency` serves with that many predictions at once instead (apps.gradio_app.launch, which
    `zoo app` calls with the default), to compare settings.
    """
    port = port or free_port()
    command = ["-m", "zoo.cli", "app", "--checkpoint", str(checkpoint), "--port", str(port)]
    if concurrency is not None:
        code = "import sys; from apps.gradio_app import launch; launch([sys.argv[1]], port=int(sys.argv[2]), concurrency=int(sys.argv[3]))"
        command = ["-c", code, str(checkpoint), str(port), str(concurrency)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "WANDB_MODE": "disabled"}
    env.pop("GRADIO_TEMP_DIR", None)  # as a user starts it: the app makes its own upload folder
    log = open(cwd / f"app_{port}.log", "w+")  # noqa: SIM115 - closed below; a pipe nobody reads would fill up
    proc = subprocess.Popen(
        [sys.executable, *command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(
                        f"zoo app exited with {proc.returncode}:\n{log.read()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        else:
            raise RuntimeError("zoo app did not answer within 2 minutes")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux: 5 > /proc/PID/clear_refs), so a peak belongs to what follows."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def zoo_predict(checkpoint: Path, images: list[Path], cwd: Path) -> dict[str, dict]:
    """`zoo predict`'s answer for each image, by path, from one subprocess."""
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "predict", "--checkpoint", str(checkpoint),
                          *map(str, images)], cwd=cwd, capture_output=True, text=True, check=True)  # fmt: skip
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["path"]: row for row in rows}


def disagreement(answer: dict, expected: dict) -> str | None:
    """None when the app's Label output matches zoo predict's row, else what differs."""
    if answer["label"] != expected["label"]:
        return f"label {answer['label']} vs zoo predict's {expected['label']}"
    scores = {c["label"]: c["confidence"] for c in answer["confidences"]}
    for item in expected["topk"]:
        got = scores.get(item["label"])
        if got is None or abs(got - item["score"]) > TOLERANCE:
            return f"{item['label']}: {got} vs zoo predict's {item['score']}"
    return None


def hammer(url: str, images: list[Path], expected: dict[str, dict], clients: int, requests: int) -> dict:
    """`clients` users on their own threads, `requests` predictions each; latencies, errors, mismatches."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    mismatches: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def user(u: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as err:
            with lock:
                errors.append(f"client {u}: {type(err).__name__}: {err}")
            start.wait()
            return
        start.wait()  # every user connected: the clock starts with all of them ready to send
        for r in range(requests):
            path = images[(u * requests + r) % len(images)]
            begin = time.perf_counter()
            try:
                answer = client.predict(handle_file(str(path)), api_name="/predict")
            except Exception as err:
                with lock:
                    errors.append(f"{path.name}: {type(err).__name__}: {err}")
                continue
            took = time.perf_counter() - begin
            wrong = disagreement(answer, expected[str(path)])
            with lock:
                latencies.append(took)
                if wrong:
                    mismatches.append(f"{path.name}: {wrong}")

    threads = [threading.Thread(target=user, args=(u,)) for u in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    begin = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    ordered = sorted(latencies)

    def quantile_ms(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else None

    return {
        "clients": clients, "requests_per_client": requests, "answered": len(latencies), "errors": errors,
        "mismatches": mismatches, "wall_s": wall, "throughput_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else None, "p95_ms": quantile_ms(0.95),
        "max_ms": ordered[-1] * 1e3 if ordered else None,
    }  # fmt: skip


def train(workdir: Path) -> Path:
    """The CNN recipe on the bundled sample, one short epoch: a real checkpoint in seconds."""
    zoo("fit", "--config", str(ROOT / "configs" / "cnn.yaml"), "--experiment", "app_load",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--data.num_workers", "0", cwd=workdir)  # fmt: skip
    return next((workdir / "runs" / "app_load").rglob("best.ckpt"))


def run(
    checkpoint: Path,
    images: list[Path],
    workdir: Path,
    clients: int,
    requests: int,
    concurrency: int | None = None,
    expected: dict[str, dict] | None = None,
) -> dict:
    """Serve `checkpoint` with `zoo app`, hammer it, and check every answer against `zoo predict`."""
    expected = expected or zoo_predict(checkpoint, images, workdir)
    with serve(checkpoint, workdir, concurrency=concurrency) as (url, proc):
        idle = memory_mb(proc.pid)
        result = hammer(url, images, expected, clients, requests)
        result["server_memory_mb"] = {"idle_rss": idle["rss_mb"], **memory_mb(proc.pid)}
    return result


def main(clients: int, requests: int, sweep: list[int]) -> dict:
    load = os.getloadavg()[0]  # other work on the machine slows every figure: recorded beside them
    images = list_images(sample_root() / "val")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = train(Path(tmp))
        expected = zoo_predict(checkpoint, images, Path(tmp))
        result = run(checkpoint, images, Path(tmp), clients, requests, expected=expected)
        compared = {n: run(checkpoint, images, Path(tmp), clients, requests, n, expected) for n in sweep}
    keys = ("answered", "errors", "mismatches", "p50_ms", "p95_ms", "throughput_per_s")
    return {
        "machine": describe(), "load_average_1min_before": round(load, 2), "images": len(images), **result,
        "by_concurrency": {n: {k: r[k] for k in keys} for n, r in compared.items()},
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=[1, 4, 8], help="also serve with these predictions at once"
    )
    a = parser.parse_args()
    out = main(a.clients, a.requests, a.sweep)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "app_load.json").write_text(json.dumps(out, indent=1) + "\n")
    mem = out["server_memory_mb"]
    print(
        f"zoo app, {a.clients} clients x {a.requests} predictions ({out['machine']['cores']} cores, load "
        f"{out['load_average_1min_before']}): {out['answered']} answered, {len(out['errors'])} errors, "
        f"{len(out['mismatches'])} differing from zoo predict; p50 {out['p50_ms']:.0f} ms, p95 {out['p95_ms']:.0f} ms, "
        f"{out['throughput_per_s']:.1f} predictions/s; server RSS {mem['idle_rss']:.0f} MB idle, "
        f"peak {mem['peak_rss_mb']:.0f} MB"
    )
    for n, r in out["by_concurrency"].items():
        print(
            f"  {n} at once: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, {r['throughput_per_s']:.1f}/s, "
            f"{len(r['errors'])} errors, {len(r['mismatches'])} differing"
        )
