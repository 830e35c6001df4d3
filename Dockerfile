# syntax=docker/dockerfile:1
# One image for the operator, the agent runtime and the model gateway:
#   stoa operator | stoa agent | stoa gateway
# Build: make image   (docker build -t ghcr.io/stoa-dev/stoa:dev .)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a wheel of Stoa and a virtualenv with it and its dependencies -----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/stoa \
 && /opt/stoa/bin/pip install --upgrade pip setuptools wheel
COPY pyproject.toml README.md ./
COPY agents/ agents/
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && /opt/stoa/bin/pip install /dist/*.whl \
 && /opt/stoa/bin/python -m compileall -q /opt/stoa/lib

# ---- final: slim Python, the venv only, no compilers, no pip cache, non-root ---------------------------
FROM ${PYTHON_IMAGE}
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
