"""Where zoo's YAML recipes live: named in help screens and in errors about config files."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe_files() -> list[Path]:
    """The top-level recipes (configs/*.yaml), sorted; none when zoo runs without its source tree."""
    return sorted(CONFIGS.glob("*.yaml")) if CONFIGS.is_dir() else []
