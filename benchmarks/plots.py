"""Draw one PNG per comparison from the JSON results: `python -m benchmarks.plots`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def bars(name: str, labels: list[str], values: list[float], title: str, xlabel: str, goal: float | None = None,
         fmt: str = "{:.3f}", lim: tuple[float, float] | None = None) -> None:  # fmt: skip
    """Horizontal bars, zoo's in colour and its peers' in grey, first label on top."""
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(values) + 1.2))
    peers = ("published", "torchvision", "plain", "eager", "bare", "fastai")
    colours = ["0.6" if lbl.startswith(peers) or "scratch" in lbl else "C0" for lbl in labels]
    ax.barh(range(len(values)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v, i, " " + fmt.format(v), ha="left", va="center", fontsize=8)
    if goal is not None:
        ax.axvline(goal, color="C3", ls="--", lw=1, label=f"goal {goal}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(*(lim or (0, max(values) * 1.15)))
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


def curves(race: dict) -> None:
    """Validation accuracy against wall time since launch, every round of both tools."""
    target = race.get("common_target")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for tool, colour in (("zoo", "C0"), ("fastai", "0.5")):
        for i, curve in enumerate(race["curves"][tool]):
            ax.plot([p["time"] for p in curve], [p["val_acc"] for p in curve], "o-", color=colour, ms=3,
                    label=(f"{tool} (median {race[tool]['median_time_to_s_by_target'][str(target)]:.1f} s to {target})"
                           if target else tool) if i == 0 else None)  # fmt: skip
    if target:
        ax.axhline(
            target, color="C3", ls="--", lw=1, label=f"{target}: highest target both reached in every round"
        )
    ax.set_xlabel("seconds since the process started")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Time to accuracy, same folder/net/weights ({race['rounds']} rounds each)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "fastai_time_to_accuracy.png", dpi=110)
    plt.close(fig)


def turns(lo: dict, name: str = "loop_overhead") -> None:
    """Each epoch pair's speed ratio (plain seconds / zoo seconds) along each run, and the runs' totals."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, run in enumerate(lo["runs"]):
        pairs = [p / z for p, z in zip(run["plain_epoch_s"], run["zoo_epoch_s"], strict=True)]
        ax.plot(range(1, len(pairs) + 1), pairs, ".", color=f"C{i}", ms=4, alpha=0.6)
        ax.axhline(run["ratio"], color=f"C{i}", lw=1.5, label=f"run {i + 1}: {run['ratio']:.3f} overall")
    ax.axvspan(0.5, lo["warmup_pairs"] + 0.5, color="0.9", label="warm-up, not counted")
    ax.axhline(0.97, color="C3", ls="--", lw=1, label="goal 0.97")
    ax.set_xlabel("epoch (zoo's, paired with the plain loop's epoch just before it)")
    ax.set_ylabel("zoo speed / plain loop speed")
    limits = ", kernels held to " + "/".join(
        sorted({v.upper() for v in lo["machine"].get("isa_limits", {}).values()})
    )
    ax.set_title("zoo fit vs a hand-written loop, taking turns epoch by epoch"
                 + (limits if lo["machine"].get("isa_limits") else ""), fontsize=10)  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    if acc := load("fashion_mnist_accuracy"):
        from benchmarks.fashion_mnist_accuracy import PUBLISHED

        labels = [f"zoo {k}" for k in acc["zoo"]] + [
            f"published: {k.split(' (')[0].split(',')[0]}" for k in PUBLISHED
        ]
        values = [r["test_acc"] for r in acc["zoo"].values()] + list(PUBLISHED.values())
        bars("fashion_mnist_accuracy", labels, values, "Fashion-MNIST test accuracy (10k test set)", "accuracy",
             lim=(0.85, 0.965))  # fmt: skip
    if tr := load("transfer"):
        methods = {"finetuned": "fine-tuned", "probe": "linear probe", "scratch": "scratch"}
        labels = [f"{methods[m]}, {k.replace('_', ' ')}" for k in tr for m in methods]
        values = [tr[k][f"median_{m}"] for k in tr for m in methods]
        bars("transfer", labels, values, "ImageNet EfficientNet-Lite0 on Fashion-MNIST (medians; sample: val acc)",
             "accuracy")  # fmt: skip
    if own := load("transfer_own_checkpoint"):
        sizes = sorted(own, key=int, reverse=True)
        labels = [f"{name}, {n}/class" for n in sizes for name in ("fine-tuned", "scratch")]
        values = [own[n][f"median_{name}"] for n in sizes for name in ("finetuned", "scratch")]
        bars("transfer_own_checkpoint", labels, values,
             "resnet10t from a classes 0-4 checkpoint: classes 5-9 test accuracy (medians)", "accuracy")  # fmt: skip
    for name in ("loop_overhead", "loop_overhead_avx2_kernels"):
        if lo := load(name):
            turns(lo, name)
    if al := load("app_load"):
        runs = {
            "zoo app (default: 4 at once)": al,
            **{f"{n} at once": r for n, r in al["by_concurrency"].items()},
        }
        bars("app_load", list(runs), [r["throughput_per_s"] for r in runs.values()],
             f"zoo app: {al['clients']} users x {al['requests_per_client']} predictions, {al['machine']['cores']} cores",
             "predictions/s", fmt="{:.1f}")  # fmt: skip
    if ds := load("doctor_speed"):
        m = ds["median_images_per_s"]
        keys = {
            "header_hash": "zoo doctor: headers + hashes (brief)",
            "full_decode": "zoo doctor: full decode",
        }
        bars("doctor_speed", list(keys.values()), [m[k] for k in keys],
             f"zoo doctor on {ds['images']} small images (medians of {ds['rounds']})", "images/s", fmt="{:.0f}")  # fmt: skip
    if dp := load("data_pipeline"):
        m = dp["medians"]
        keys = [
            "zoo_cached_train",
            "zoo_streamed_train",
            "torchvision_train",
            "zoo_cached_eval",
            "zoo_streamed_eval",
            "torchvision_eval",
        ]
        bars("data_pipeline", [k.replace("_", " ") for k in keys], [m[k] for k in keys],
             f"Data pipeline, 224 px JPEGs, {dp['workers']} worker(s)", "images/s", fmt="{:.0f}")  # fmt: skip
    if race := load("fastai_time_to_accuracy"):
        curves(race)
    if inf := load("inference"):
        names = list(inf["models"])
        labels = [
            f"{n}: {k}" for n in names for k in ("predict/forward", "Grad-CAM/forward", "eager/ONNX b1")
        ]
        values = [v for n in names for v in (inf["models"][n]["predict_vs_forward"], inf["models"][n]["gradcam_vs_forward"],
                                             inf["models"][n]["onnx_speedup_b1"])]  # fmt: skip
        bars(
            "inference",
            labels,
            values,
            "Inference: ratios (lower is better for the first two)",
            "ratio",
            fmt="{:.2f}",
        )
    if tq := load("techniques"):
        from benchmarks.techniques import summarise

        fashion = summarise(tq["runs"]["fashion"])
        rows = [r for r, v in fashion.items() if v["diff_points"] is not None and r != "baseline"]
        diffs = [fashion[r]["diff_points"] for r in rows]
        bars("techniques", rows, diffs, "Fashion-MNIST subset: each technique vs the CNN recipe (medians of 3 seeds)",
             "val acc difference, points", fmt="{:+.1f}", lim=(min(diffs) - 2, max(diffs) + 2))  # fmt: skip
    if pr := load("pruning"):
        labels = [f"{net}, {key} pruned" for net, rows in pr["nets"].items() for key in rows]
        values = [r["gzip_mb"] for rows in pr["nets"].values() for r in rows.values()]
        bars("pruning", labels, values, "Exported model gzip'd, dense vs magnitude-pruned (inference: no faster)",
             "MB", fmt="{:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
