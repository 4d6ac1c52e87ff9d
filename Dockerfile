# zoo in a container: CPU or NVIDIA GPU (the torch wheel carries CUDA; run with --gpus all).
#   docker build -t zoo .
#   docker run --rm -v "$PWD/runs:/work/runs" zoo                          # fine-tune on the bundled sample
#   docker run --rm --gpus all -v /data:/data -v "$PWD/runs:/work/runs" zoo \
#       fit --config /app/configs/resnet18_finetune.yaml --data.root /data/my_images
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch first, in its own layer: it is most of the image and changes least often.
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY zoo zoo
COPY datamodules datamodules
COPY apps apps
COPY configs configs
RUN pip install . && useradd --create-home --uid 1000 zoo && mkdir /work && chown zoo:zoo /work

USER 1000:1000
WORKDIR /work
ENTRYPOINT ["zoo"]
CMD ["fit", "--config", "/app/configs/finetune.yaml"]
