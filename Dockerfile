# A presenter worker: one `python -m presenter.serve` per container (docs/deploy.md).
#
# Builds from the registries only (Debian, PyPI, the PyTorch wheel index): the default avatar and
# the ONNX engines are made at build time, so nothing is made or downloaded when a worker starts.
#
#   docker build -t presenter .
#   docker run --rm --network host -e PRESENTER_TOKEN=s3cret presenter --worker-id w1
# (arguments are added to the server's: it listens on 0.0.0.0:8080; `--help` lists them all)
#
# Media goes straight between the browser and the worker's ICE candidates: give the container an
# address browsers can reach (host networking, one worker per host/GPU; see docs/deploy.md).
# GPU image: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 on a CUDA base.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# Runtime packages of scripts/setup.sh (chromium and nginx-light are for tests and the proxy, not
# the worker), plus the EGL/GLES libraries MediaPipe's face landmarker links against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
      espeak-ng libespeak-ng1 libportaudio2 libegl1 libgles2 \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PRESENTER_HOME=/var/lib/presenter \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch is pinned exactly and taken from the CPU index: an open range pulls a multi-GB CUDA build.
RUN python3 -m venv $VIRTUAL_ENV \
 && pip install --upgrade pip \
 && pip install "torch==2.13.0" --index-url "$TORCH_INDEX"

WORKDIR /opt/presenter-src
COPY pyproject.toml README.md ./
COPY presenter presenter
COPY engines engines
COPY export export
COPY web web
RUN pip install ".[serve,onnx]"

# The default avatar pack and the exported engines, made once here (load_pipeline does both).
RUN useradd --system --uid 10001 --home-dir $PRESENTER_HOME --create-home presenter \
 && python -c "from presenter.stream.pipeline import load_pipeline; load_pipeline()" \
 && chown -R presenter:presenter $PRESENTER_HOME

USER presenter
WORKDIR $PRESENTER_HOME
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
# Off loopback a bearer token is required: set PRESENTER_TOKEN (or pass --token).
ENTRYPOINT ["python", "-m", "presenter.serve", "--host", "0.0.0.0", "--port", "8080"]
