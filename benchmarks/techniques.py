"""The course's techniques, measured: the CNN recipe vs each technique alone, on two real image folders.

    apt-get install dataset-fashion-mnist
    python -m benchmarks.techniques [--datasets fashion digits] [--seeds 0 1 2] [--rows baseline constant ...]
        [--epochs 6] [--skip-pruning] [--skip-search] [--quick]

Data (written once under benchmarks/.data/techniques/, reused after):
- fashion: a fixed, seeded, class-balanced draw from Fashion-MNIST's training set, 28 px grayscale PNGs
  (FASHION_PER_CLASS train and val images per class).
- digits: scikit-learn's bundled `load_digits()` (1,797 real 8x8 handwritten digits), upscaled bilinearly to
  16 px so the CNN's three poolings leave 2x2; DIGITS_TRAIN_PER_CLASS per class to train and the rest (about
  150 a class) to validate, drawn with a fixed seed. (Trained on 75 % of them, the baseline reached 0.996:
  no room left for any technique to show.) Flips are off for digits, which are not mirror-symmetric.

Every row is one `zoo fit` of configs/cnn.yaml for `--epochs` epochs with the row's overrides, run
in-process (one import for all runs) with its own `--runs_dir`, W&B off, no progress bar, no doctor pass,
`--seed_everything` per seed. A row's val acc is the best `val/acc` of the run's metrics.csv; its wall
time is the whole `zoo fit` call (data loading, validation and checkpoints included). Pruning rows
(zoo.pruning.LotteryTicket) train `--epochs` per round, so they take rounds + 1 times longer; their val acc
is the last round's, from pruning.json. Search rows (`zoo tune`) spend SEARCH_TRIALS baseline-length trials;
their val acc is the best trial's and their wall time the whole search. Reported per row and data set: the
median val acc over the seeds, its min-max, the difference of the median from the baseline's in points and
the median wall time. Writes benchmarks/results/techniques.json (the machine, the command, every run's
figures) and the table between the markers in docs/techniques.md. `--rows` reruns some rows and keeps
the others' results when the settings match.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / ".data" / "techniques"  # benchmarks/.data/ is git-ignored
DOCS = ROOT / "docs" / "techniques.md"
CONFIG = ROOT / "configs" / "cnn.yaml"
SAMPLE = ROOT / "datamodules" / "samples" / "fashion_mnist_small"
LABELS = {"fashion": "Fashion-MNIST", "digits": "digits", "sample": "sample"}
MARKERS = ("<!-- techniques table -->", "<!-- /techniques table -->")

# configs/cnn.yaml trains 15 epochs. 6 keep a fashion run at 23-30 s and a digits run at 5-6 s on 2 CPU cores
# shared with another job, so the whole table (46 run lengths per seed and data set: 25 rows, 3 pruning rows
# of 3 rounds, 2 searches of 6 trials) takes about 70 min there; and a short run is where one-cycle's
# promise, fast convergence, should show.
EPOCHS = 6
FASHION_PER_CLASS = {"train": 150, "val": 100}
DIGITS_SIZE = 16
DIGITS_TRAIN_PER_CLASS = 30
PRUNE_ROUNDS = 2
SEARCH_TRIALS = 6
SEARCH_SPACE = {
    "model.lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "model.weight_decay": {"low": 1e-5, "high": 0.1, "log": True},
    "model.optimizer": ["adamw", "sgd"],
    "model.head_dropout": {"low": 0.0, "high": 0.5},
}


@dataclass(frozen=True)
class Row:
    """One line of the table: the baseline plus `args` (spelled as on the command line), and what the course
    says should happen."""

    name: str
    args: str
    course: str
    note: str = ""
    # "fit"; "prune": one run length per round; "long": as long as "prune"; "search": `zoo tune`
    kind: str = "fit"


def prune_row(sparsity: float) -> Row:
    return Row(
        f"prune_{round(sparsity * 100)}",
        f"--trainer.callbacks+=zoo.pruning.LotteryTicket --trainer.callbacks.sparsity {sparsity} "
        f"--trainer.callbacks.rounds {PRUNE_ROUNDS}",
        "iterative magnitude pruning with weight rewinding keeps the accuracy to high sparsity (lottery tickets)",
        f"{PRUNE_ROUNDS + 1} rounds of --epochs each, the last at {sparsity:.0%} sparsity",
        kind="prune",
    )


def search_row(sampler: str, course: str) -> Row:
    # No pruner: every trial runs all its epochs, so both samplers spend exactly the same compute.
    note = f"best of {SEARCH_TRIALS} full trials, picked on the val set it reports: optimistic"
    return Row(f"{sampler}_search", f"--sampler {sampler} --pruner none", course, note, kind="search")


ROWS = (
    Row("baseline", "", "configs/cnn.yaml: AdamW, one-cycle, batch norm, label smoothing 0.05, weight decay 0.01"),
    # schedules
    Row("constant", "--model.scheduler constant", "a constant lr ends lower than one-cycle"),
    Row("step", "--model.scheduler step --model.step_size 2 --model.gamma 0.5",
        "step decay beats a constant lr and trails one-cycle"),
    Row("exponential", "--model.scheduler exponential --model.gamma 0.7", "like step decay, smoother",
        "gamma 0.7: the lr ends near lr/10 after 6 epochs"),
    Row("cosine", "--model.scheduler cosine", "cosine annealing matches one-cycle"),
    Row("plateau", "--model.scheduler plateau --model.plateau_patience 1 --model.plateau_factor 0.2",
        "cutting the lr when val loss stalls helps little in a short run",
        "patience 1: the default 10 would never act in 6 epochs"),
    Row("warmup_step", "--model.scheduler step --model.step_size 2 --model.gamma 0.5 --model.warmup_epochs 1",
        "a warm-up steadies the first steps: beats step decay without it"),
    # optimisers
    Row("sgd", "--model.optimizer sgd --model.momentum 0.9 --model.nesterov true --model.lr 0.03",
        "SGD with Nesterov momentum generalises as well as Adam but needs more epochs",
        "lr x10 = 0.03, SGD's usual range; weight decay 0.01 becomes L2 in the gradient"),
    Row("adam", "--model.optimizer adam", "Adam scales its L2 by the adaptive rate: AdamW regularises better",
        "the same lr; weight decay 0.01 becomes L2 in the gradient"),
    Row("rmsprop", "--model.optimizer rmsprop", "RMSprop adapts per weight like Adam, a little behind it",
        "the same lr, momentum 0.9, weight decay as L2"),
    # initialisation x activation
    Row("kaiming_relu", "--model.init kaiming --model.activation relu",
        "He init keeps ReLU activations' variance; with batch norm the init matters little"),
    Row("xavier_tanh", "--model.init xavier --model.activation tanh",
        "Glorot init suits tanh; tanh saturates and trains slower than ReLU"),
    Row("lecun_selu", "--model.init lecun --model.activation selu --model.batch_norm false --model.dropout 0 "
        "--model.head_dropout 0", "SELU with LeCun init self-normalises: about ReLU + batch norm, without BN",
        "batch norm and dropout off, as SELU requires"),
    Row("gelu", "--model.activation gelu", "GELU, a smooth ReLU: about the same on a small CNN"),
    # dropout, batch norm
    Row("dropout", "--model.dropout 0.3", "dropout pays when the net overfits and costs in short runs",
        "Dropout2d 0.3 after every block (the recipe: 0)"),
    Row("no_batch_norm", "--model.batch_norm false", "without batch norm training is slower and less stable"),
    # L1, L2
    Row("l1", "--model.l1 1e-5", "an L1 penalty drives weights to zero at little accuracy cost"),
    Row("no_weight_decay", "--model.weight_decay 0", "without weight decay the net overfits more"),
    Row("weight_decay_0.1", "--model.weight_decay 0.1", "stronger weight decay: less overfitting, until it underfits"),
    Row("l2_adam", "--model.optimizer adam --model.weight_decay 5e-4", "classic L2 with Adam at an L2-sized factor",
        "Adam with 5e-4 x w added to the gradient"),
    # targets and mixing
    Row("mixup", "--model.mixup 0.2", "mixup regularises and needs more epochs to pay off"),
    Row("cutmix", "--model.cutmix 1.0", "cutmix regularises like mixup and keeps local features"),
    Row("label_smoothing", "--model.label_smoothing 0.1", "smoothing 0.1 curbs over-confidence: +0 to +1 point"),
    Row("no_label_smoothing", "--model.label_smoothing 0", "hard targets: a little lower accuracy"),
    # weight averaging
    Row("ema", "--trainer.callbacks+=EMAWeightAveraging --trainer.callbacks.decay 0.99",
        "an average of the recent weights generalises better",
        "decay 0.99 (a ~100-step horizon; the default 0.999 spans ~1,000 steps, more than a run: fashion ~280, "
        "digits ~60), averaging from the first step"),
    # pruning, and the baseline trained as long as the pruning rows: the dense net at equal epochs
    Row(f"baseline_x{PRUNE_ROUNDS + 1}", "", "more epochs of the same recipe: the reference a pruning row must match",
        f"{PRUNE_ROUNDS + 1} times --epochs, as long as a pruning row (one-cycle over the whole run)", kind="long"),
    *(prune_row(s) for s in (0.5, 0.8, 0.9)),
    # hyper-parameter search at an equal budget
    search_row("random", "random search is a strong baseline with few trials"),
    search_row("tpe", "TPE finds better settings than random search at the same budget"),
)  # fmt: skip
BY_NAME = {r.name: r for r in ROWS}


@dataclass(frozen=True)
class Dataset:
    """An image folder root/{train,val}/<class>/ and the `zoo fit` arguments that suit it."""

    name: str
    root: Path
    args: tuple[str, ...]


def fashion_folder() -> Path:
    """FASHION_PER_CLASS train/val PNGs per class from Fashion-MNIST's training set, drawn with seed 0."""
    from benchmarks.common import write_subset
    from datamodules.fashion_mnist import DEBIAN_DIR, load_split

    root = DATA / f"fashion_{FASHION_PER_CLASS['train']}_{FASHION_PER_CLASS['val']}"
    if not root.exists():
        x, y = load_split(Path(DEBIAN_DIR), "train")
        with _filled_whole(root) as tmp:
            write_subset(tmp, x, y, range(10), FASHION_PER_CLASS, np.random.default_rng(0))
    return root


def digits_folder() -> Path:
    """scikit-learn's 1,797 digits as DIGITS_SIZE px PNGs: DIGITS_TRAIN_PER_CLASS of each class to train, the
    rest (about 150 a class) to validate, drawn with seed 0."""
    from sklearn.datasets import load_digits

    root = DATA / f"digits_{DIGITS_TRAIN_PER_CLASS}_{DIGITS_SIZE}px"
    if not root.exists():
        digits = load_digits()
        pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8), values 0..16 -> 0..255
        rng = np.random.default_rng(0)
        with _filled_whole(root) as tmp:
            for c in range(10):
                pick = rng.permutation(np.flatnonzero(digits.target == c))
                n = DIGITS_TRAIN_PER_CLASS
                for split, indices in (("train", pick[:n]), ("val", pick[n:])):
                    folder = tmp / split / str(c)
                    folder.mkdir(parents=True)
                    for i in indices:
                        image = Image.fromarray(pixels[i]).resize((DIGITS_SIZE,) * 2, Image.BILINEAR)
                        image.save(folder / f"{i:04d}.png")
    return root


@contextmanager
def _filled_whole(root: Path) -> Iterator[Path]:
    """A folder beside `root` to fill, renamed to `root` when the block ends: no half-written data set is reused.

    (zoo.atomic.written_beside does this for files; a folder needs rmtree, not unlink, for a stale partial one.)
    """
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    partial.rename(root)


def datasets(names: list[str], quick: bool) -> list[Dataset]:
    if quick:  # the bundled sample, two training batches an epoch: every path in a few seconds
        fast = ("--trainer.limit_train_batches", "2", "--data.num_workers", "0")  # fmt: skip
        return [Dataset("sample", SAMPLE, ("--data.image_size", "28", *fast))]
    made = {
        "fashion": lambda: Dataset("fashion", fashion_folder(), ("--data.image_size", "28")),
        # digits are not mirror-symmetric: the recipe's own comment says to turn the flips off for them
        "digits": lambda: Dataset(
            "digits", digits_folder(), ("--data.image_size", str(DIGITS_SIZE), "--data.hflip", "false")
        ),
    }
    return [made[n]() for n in names]


def row_command(row: Row, data: Dataset, seed: int, epochs: int, runs_dir: Path, space: Path) -> list[str]:
    """The `zoo` arguments of one run."""
    common = ["--config", str(CONFIG), "--data.root", str(data.root), *data.args, "--seed_everything", str(seed),
              "--trainer.logger", "CSVLogger", "--trainer.enable_progress_bar", "false", "--doctor", "false",
              "--runs_dir", str(runs_dir), *shlex.split(row.args)]  # fmt: skip
    if row.kind == "search":
        return ["tune", *common, "--trainer.max_epochs", str(epochs), "--search", str(space),
                "--trials", str(SEARCH_TRIALS), "--seed", str(seed), "--study", row.name]  # fmt: skip
    rounds = PRUNE_ROUNDS + 1 if row.kind in ("prune", "long") else 1
    return ["fit", *common, "--trainer.max_epochs", str(epochs * rounds), "--experiment", row.name]


def read_result(row: Row, runs_dir: Path) -> dict:
    """The row's val acc from what the run wrote (see the module docstring), with the pruning rounds or the
    search's summary beside it."""
    if row.kind == "search":
        summary = json.loads((runs_dir / row.name / "summary.json").read_text())
        keep = ("best_params", "n_complete", "n_pruned")
        return {"val_acc": float(summary["best_value"]), **{k: summary.get(k) for k in keep}}
    if row.kind == "prune":
        rounds = json.loads(_only(runs_dir.rglob("pruning.json")).read_text())["rounds"]
        return {"val_acc": float(rounds[-1]["val_acc"]), "rounds": rounds}
    with open(_only(runs_dir.rglob("metrics.csv"))) as f:
        return {"val_acc": max(float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc"))}


def _only(paths: Iterable[Path]) -> Path:
    found = list(paths)
    if len(found) != 1:
        raise RuntimeError(f"expected one file, found {len(found)}: {found}")
    return found[0]


def run_one(row: Row, data: Dataset, seed: int, epochs: int, work: Path, space: Path) -> dict:
    """One timed in-process `zoo` call; its val acc, or the error that stopped it."""
    from zoo.cli import main as zoo_main

    runs_dir = work / data.name / row.name / f"seed{seed}"
    args = row_command(row, data, seed, epochs, runs_dir, space)
    start = time.perf_counter()
    try:
        rc = zoo_main(args)
    except Exception as err:  # a row whose feature is missing or broken must not cost the others
        rc, failure = 1, f"{type(err).__name__}: {err}"
    else:
        failure = f"zoo exited with {rc}"
    wall_s = time.perf_counter() - start
    if rc in (130, 143):  # Ctrl-C or SIGTERM stopped the fit: stop the benchmark too
        raise SystemExit(rc)
    out = {"seed": seed, "wall_s": round(wall_s, 2), "args": args, "val_acc": None, "error": None}
    if rc != 0:
        return {**out, "error": failure}
    try:
        return {**out, **read_result(row, runs_dir)}
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as err:  # a file missing or not as agreed
        return {**out, "error": f"{type(err).__name__}: {err}"}


def summarise(runs: dict[str, list[dict]], baseline: str = "baseline") -> dict[str, dict]:
    """Per row: median val acc over the seeds that finished, min, max, median wall time, failures, and the
    median's difference from the baseline's median in points (None without a baseline)."""
    out = {}
    for name, seeds in runs.items():
        accs = [r["val_acc"] for r in seeds if r["val_acc"] is not None]
        out[name] = {
            "median_val_acc": statistics.median(accs) if accs else None,
            "min_val_acc": min(accs, default=None),
            "max_val_acc": max(accs, default=None),
            "median_wall_s": statistics.median(r["wall_s"] for r in seeds),
            "failed": len(seeds) - len(accs),
        }
    base = out.get(baseline, {}).get("median_val_acc")
    for s in out.values():
        acc = s["median_val_acc"]
        s["diff_points"] = None if base is None or acc is None else round(100 * (acc - base), 2)
    return out


def table(results: dict) -> str:
    """The markdown table: one row per technique, one group of columns per data set."""
    names = list(results["runs"])
    summaries = {d: summarise(results["runs"][d]) for d in names}
    head = "| technique | the course predicts |" + "".join(
        f" {LABELS.get(d, d)}: val acc (min–max) | Δ points | wall s |" for d in names
    )
    lines = [head, "|" + " --- |" * (2 + 3 * len(names))]
    rows = [r for r in ROWS if any(r.name in s for s in summaries.values())]
    for row in rows:
        cells = [f"`{row.name}`", row.course + (f" ({row.note})" if row.note else "")]
        for d in names:
            s = summaries[d].get(row.name)
            cells += _cells(s) if s else ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for d in names for runs in results["runs"][d].values() for r in runs})
    lines.append("")
    machines = sorted({machine_label(i["machine"]) for i in results["invocations"]})
    on = "machine" if len(machines) == 1 else "machines (compare wall times within one only)"
    lines.append(f"Median of seeds {', '.join(map(str, seeds))}; {results['settings']['epochs']} epoch(s) a run "
                 f"(pruning: one such length per round); {on}: {'; '.join(machines)}.")  # fmt: skip
    return "\n".join(lines)


def _cells(s: dict) -> list[str]:
    failed = f" ({s['failed']} failed)" if s["failed"] else ""
    if s["median_val_acc"] is None:
        return [f"failed{failed}", "–", f"{s['median_wall_s']:.0f}"]
    acc = f"{s['median_val_acc']:.3f} ({s['min_val_acc']:.3f}–{s['max_val_acc']:.3f}){failed}"
    diff = "–" if s["diff_points"] is None else f"{s['diff_points']:+.1f}"
    return [acc, diff, f"{s['median_wall_s']:.0f}"]


def machine_label(m: dict) -> str:
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return f"{m['cpu']} ({m['torch_cpu_capability']}), {m['cores']} cores{gpu}, torch {m['torch']}"


def write_docs(markdown: str, path: Path = DOCS) -> None:
    """Replace what lies between the table markers of docs/techniques.md."""
    text = path.read_text()
    start, end = (text.index(m) for m in MARKERS)
    path.write_text(text[: start + len(MARKERS[0])] + "\n" + markdown + "\n" + text[end:])


def main(
    names: list[str],
    seeds: list[int],
    rows: list[str] | None,
    epochs: int,
    quick: bool = False,
    skip: tuple[str, ...] = (),
    out: Path = RESULTS / "techniques.json",
    command: str = "",
) -> dict:
    """Run the chosen rows on the chosen data sets, writing `out` after every run; returns the results."""
    import zoo.lightning_cli  # noqa: F401  (imported here, not inside the first run's clock)
    from benchmarks.machine import describe

    if quick:
        seeds, epochs, rows = seeds[:1], 1, rows or ["baseline", "constant"]
    chosen = [BY_NAME[n] for n in rows] if rows else [r for r in ROWS if r.kind not in skip]
    settings = {"epochs": epochs, "fashion_per_class": FASHION_PER_CLASS, "digits_size": DIGITS_SIZE,
                "digits_train_per_class": DIGITS_TRAIN_PER_CLASS,
                "prune_rounds": PRUNE_ROUNDS, "search_trials": SEARCH_TRIALS, "quick": quick}  # fmt: skip
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("settings") != settings:  # another size of run: its figures do not mix with these
        results = {"settings": settings, "runs": {}}
    results.update(machine=describe(), command=command, date=datetime.now().isoformat(timespec="seconds"))
    # `--rows` reruns keep the other rows: every invocation is listed, so a table mixing machines says so
    results.setdefault("invocations", []).append({k: results[k] for k in ("machine", "command", "date")})
    # Stop after the run a SIGTERM hits: it may reach a data-loader worker first (a signal to the process group),
    # and the run then fails with the worker's error, not zoo's interrupt code. Lightning chains this handler.
    stopped: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            space = Path(tmp) / "search_space.yaml"
            space.write_text(yaml.safe_dump(SEARCH_SPACE))
            for data in datasets(names, quick):
                runs = results["runs"].setdefault(data.name, {})
                for row in chosen:
                    runs[row.name] = []
                    for seed in seeds:
                        r = run_one(row, data, seed, epochs, Path(tmp), space)
                        if stopped:
                            raise SystemExit(143)
                        runs[row.name].append(r)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(results, indent=1) + "\n")
                        what = (
                            f"val acc {r['val_acc']:.4f}"
                            if r["error"] is None
                            else "failed: " + r["error"][-300:]
                        )
                        print(f"{data.name} {row.name} seed {seed}: {what}, {r['wall_s']:.1f} s", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion", "digits"], choices=["fashion", "digits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(BY_NAME), metavar="ROW",
                        help=f"only these rows (default: all): {', '.join(BY_NAME)}")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--skip-pruning", action="store_true", help="leave out the zoo.pruning rows")
    parser.add_argument("--skip-search", action="store_true", help="leave out the zoo tune rows")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: the bundled sample, 1 epoch, 1 seed"
    )
    a = parser.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    skip = tuple(k for k, on in (("prune", a.skip_pruning), ("search", a.skip_search)) if on)
    out = Path(tempfile.mkdtemp()) / "techniques.json" if a.quick else RESULTS / "techniques.json"
    command = " ".join(["python -m benchmarks.techniques", *sys.argv[1:]])
    results = main(a.datasets, a.seeds, a.rows, a.epochs, a.quick, skip, out, command)
    markdown = table(results)
    print(markdown)
    if a.quick:
        out.with_suffix(".md").write_text(markdown + "\n")
        print(f"quick run: {out} and {out.with_suffix('.md')}; docs/techniques.md left alone")
    else:
        write_docs(markdown)
    failed = sum(
        r["val_acc"] is None for runs in results["runs"].values() for rs in runs.values() for r in rs
    )
    sys.exit(1 if failed else 0)
