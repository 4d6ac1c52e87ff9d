# Everyday commands. `make install` once, then the others.
.PHONY: install test lint format train

install:
	python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[dev]'

test:
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/hadolint Dockerfile

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

train:
	.venv/bin/zoo fit --config configs/finetune.yaml
