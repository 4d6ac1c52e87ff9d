# zoo in a container, on the CPU or NVIDIA GPUs. No CUDA base image: the torch wheel from PyPI brings CUDA 13
# as pip packages, so `--gpus all` (NVIDIA Container Toolkit, a driver for CUDA 13: R580 or newer) is all a
# GPU needs. Runs are written to the /runs volume, whatever the fit command.
#   docker build -t zoo .
#   mkdir -p runs && docker run --rm -v "$PWD/runs:/runs" zoo                  # fine-tune on the bundled sample
#   docker run --rm --gpus all --shm-size 2g -v "$PWD/images:/data:ro" -v "$PWD/runs:/runs" zoo \
#       fit --config /app/configs/finetune.yaml --data.root /data
#   docker run --rm -p 127.0.0.1:7860:7860 -v "$PWD/runs:/runs" zoo \
#       app --checkpoint /runs/finetune/version_0/checkpoints/best.ckpt --host 0.0.0.0
# compose.yaml runs the same image as its `train` and `app` services.
FROM python:3.11.17-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOME=/home/zoo

WORKDIR /app
# torch first, in its own layer: most of the image, and it changes least often.
RUN pip install torch==2.14.1 torchvision==0.29.1
# The dependencies in pyproject.toml, installed for an empty package, so that a change to the code (or the
# README) does not install them again.
COPY pyproject.toml ./
RUN mkdir zoo datamodules apps && touch README.md zoo/__init__.py datamodules/__init__.py apps/__init__.py \
    && pip install . && rm -rf README.md zoo datamodules apps build ./*.egg-info
COPY README.md ./
COPY zoo zoo
COPY datamodules datamodules
COPY apps apps
RUN pip install --no-deps . && rm -rf build ./*.egg-info
COPY configs configs
COPY docker docker

# /work/runs is /runs: zoo's --runs_dir defaults to `runs` under the working folder, so every fit writes to
# the volume. HOME is open to any user, for `docker run --user "$(id -u):$(id -g)"` (caches, W&B settings).
RUN useradd --uid 1000 --no-create-home --home-dir /home/zoo zoo \
    && mkdir -p /home/zoo /work /data /runs && chmod 1777 /home/zoo \
    && chown zoo:zoo /work /runs && ln -s /runs /work/runs
VOLUME ["/data", "/runs"]
USER 1000:1000
WORKDIR /work

# `zoo app` serves Gradio on 7860; give it --host 0.0.0.0 so that it is reachable from outside the container.
EXPOSE 7860
# Checks `zoo app`'s page; a container running any other zoo command passes (docker/healthcheck.py says why).
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

ENTRYPOINT ["zoo"]
CMD ["fit", "--config", "/app/configs/finetune.yaml"]
