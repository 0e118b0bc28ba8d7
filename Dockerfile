# sidecar-injector container image.
#
#   docker build -t sidecar-injector:dev .
#   make image E2E_IMAGE=registry.example/sidecar-injector:TAG   # VERSION read from pyproject.toml
#
# Two stages on the same pinned Python base: the builder installs the project and its
# runtime dependencies (exact versions from constraints.txt, no test extras) into a venv;
# the final stage copies that venv only. No compiler, no pip cache, no source tree at
# run time. The server writes nothing to disk, so the image runs with a read-only root
# filesystem (the chart mounts an emptyDir at /tmp anyway).

# Bump the patch version deliberately; both stages must use the same base so the venv's
# interpreter path (/usr/local/bin/python3.11) exists in the final image.
FROM python:3.11.17-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# The venv gets no pip or setuptools of its own (nothing at run time needs them, and a
# scanner would flag them): the base image's pip installs into it with --python.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src
# Dependency inputs first: the constraints change less often than the code.
COPY constraints.txt pyproject.toml README.md ./
COPY app ./app
# A regular (non-editable) install of the runtime dependencies only (no test extra): the
# venv holds the package, the source tree stays in this stage. pip byte-compiles what it
# installs, so nothing needs writing at run time.
RUN pip --python /opt/venv/bin/python install --no-cache-dir --constraint constraints.txt . \
    && pip --python /opt/venv/bin/python check


FROM python:3.11.17-slim-bookworm

# The OCI version label: pyproject.toml's version (tests/test_version.py keeps this default equal).
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/sidecar-injector/sidecar-injector

LABEL org.opencontainers.image.title="sidecar-injector" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects named sidecar profiles into pods" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

COPY --from=builder /opt/venv /opt/venv

# Numeric user and group (distroless "nonroot" ids): Kubernetes can verify runAsNonRoot
# without a passwd entry, and the chart's securityContext uses the same ids.
USER 65532:65532

# 8443: HTTPS admission endpoint (/mutate, /healthz, /readyz); 9090: plain-HTTP /metrics.
EXPOSE 8443 9090

# Exec form: the server is PID 1 and receives SIGTERM directly (graceful drain), no shell.
ENTRYPOINT ["/opt/venv/bin/sidecar-injector", "serve"]
