# vpt-serve on a GPU host (also runs on CPU).
# Base: plain python:3.11-slim. The torch 2.14.1 wheels from PyPI bundle their own CUDA runtime
# libraries (nvidia-* wheels), so a CUDA base image would only duplicate them; the host provides
# the driver through the NVIDIA container toolkit (`gpus`/device reservation in compose).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VPT_HOST=0.0.0.0 \
    VPT_PORT=8000 \
    VPT_DATA_DIR=/data \
    VPT_CACHE_DIR=/weights \
    HF_HOME=/weights/hf

WORKDIR /opt/vpt

# torch first, pinned: the largest layer, and it changes least often.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY training ./training
COPY app ./app
RUN pip install .

RUN useradd --create-home --uid 1000 vpt \
    && mkdir -p /data /weights \
    && chown vpt:vpt /data /weights

# Bake weights into the image (needs network at build time only):
#   docker build --build-arg BAKE_WEIGHTS=1 .                          (the default ViT-B-16-quickgelu:openai)
#   docker build --build-arg BAKE_WEIGHTS=ViT-L-14-quickgelu:openai .  (any MODEL:TAG; set VPT_BACKBONE to match)
# Empty (default): weights come from the /weights volume (see docs/deployment.md).
ARG BAKE_WEIGHTS=""
USER 1000:1000
RUN if [ "$BAKE_WEIGHTS" = "1" ]; then BAKE_WEIGHTS=ViT-B-16-quickgelu:openai; fi; \
    if [ -n "$BAKE_WEIGHTS" ]; then vpt-fetch-weights "$BAKE_WEIGHTS" --cache-dir /weights; fi

# Baked or mounted, the server never reaches for the network at start-up.
ENV HF_HUB_OFFLINE=1

EXPOSE 8000
VOLUME ["/data", "/weights"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('VPT_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=4).status != 200)"]

ENTRYPOINT ["vpt-serve"]
