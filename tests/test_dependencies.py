"""The dependency set pyproject promises: pins that say what we claim, the installed set inside them, the MIT
albumentations and not its AGPL successor, and no network call when zoo's entry points are imported."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {(req := Requirement(dep)).name: req for dep in deps}


@pytest.mark.parametrize(
    ("name", "allowed", "refused", "why"),
    [
        ("albumentations", ["2.0.0", "2.0.8"], ["1.4.24", "2.1.0"], "2.0.8 is the last MIT release"),
        ("jsonargparse", ["4.51.0", "4.53.0"], ["4.50.0", "5.0.0"], "5.0 removes what Lightning's CLI calls"),
        ("torch", ["2.6.0", "2.14.1"], ["2.5.1", "2.15.0"], "onnx.export(dynamo=True, dynamic_shapes)"),
        ("gradio", ["5.22.0", "6.31.0"], ["5.21.0", "7.0.0"], "<5.22 fails with today's hub and pydantic"),
    ],
)
def test_pyproject_pins_say_what_we_claim(name, allowed, refused, why):
    spec = pins()[name].specifier
    assert all(spec.contains(v) for v in allowed), why
    assert not any(spec.contains(v) for v in refused), why


def test_the_installed_set_is_inside_the_pins():
    outside = [
        f"{name} {metadata.version(name)} (pyproject: {req.specifier})"
        for name, req in pins().items()
        if not req.specifier.contains(metadata.version(name), prereleases=True)
    ]
    assert not outside


def test_albumentations_is_the_mit_release_and_nothing_pulls_in_albumentationsx():
    # AlbumentationsX installs the same `albumentations` module: ask who owns the module, not only the name.
    assert metadata.packages_distributions()["albumentations"] == ["albumentations"]
    assert "MIT" in metadata.metadata("albumentations")["License"]
    assert not pins()["albumentations"].specifier.contains("2.1.0")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("albumentationsx")
    wanting = [
        dist.metadata["Name"]
        for dist in metadata.distributions()
        for req in dist.requires or []
        if re.match(r"albumentationsx\b", req, re.IGNORECASE)
    ]
    assert not wanting


# Imports the modules named on the command line with every way out to the network refused and recorded.
PROBE = """
import importlib, json, os, socket, sys, warnings
calls = []
def refuse(*args, **kwargs):
    calls.append(repr(args[:1]))
    raise OSError("no network during import")
socket.getaddrinfo = socket.create_connection = socket.socket.connect = refuse
warnings.simplefilter("ignore")
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"calls": calls, "env": os.environ.get("NO_ALBUMENTATIONS_UPDATE")}))
"""


def import_offline(*modules: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_probe_sees_albumentations_call_home_when_not_told():
    assert import_offline("albumentations")["calls"]  # else the tests below would prove nothing


@pytest.mark.parametrize(
    "entry",
    [
        "zoo",
        "zoo.cli",
        "apps.inference",
        "datamodules.transforms",
    ],
)
def test_importing_an_entry_point_then_albumentations_makes_no_network_call(entry):
    result = import_offline(entry, "albumentations")
    assert result["calls"] == [] and result["env"] == "1"


# pytest's summary lists the third-party DeprecationWarnings of a short fit; one raised from zoo's own code (a
# deprecated API zoo calls: it breaks with that library's next major release) fails the test.
@pytest.mark.filterwarnings(
    "default::DeprecationWarning",
    r"error::DeprecationWarning:(zoo|datamodules|apps)(\.|$)",
)
def test_a_short_fit_calls_no_deprecated_api_from_zoos_own_code(run_zoo, image_folder, monkeypatch, capsys):
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # else each is shown once per process
    rc, _ = run_zoo("fit", "--config", ROOT / "configs" / "cnn.yaml", "--data.root", image_folder, *FAST,
                    "--trainer.limit_train_batches", 2, "--trainer.logger", "false", "--doctor", "false")  # fmt: skip
    assert rc == 0, capsys.readouterr().err[-3000:]
