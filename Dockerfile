# The flows' image for container work pools (Docker, Kubernetes): Python 3.11 slim, the
# package with the VHD encryption's C accelerator (byok/vhd/_xts.c, OpenSSL) built and
# checked, qemu-img for the VPC image flow, run as a non-root user.
#   docker build -t byok-flows .        (or the build step of deployments/prefect-container.yaml)

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# setup.py's extension is optional (a missing compiler only falls back to NumPy): here a
# build without it fails.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && cd / && /opt/venv/bin/python -c "from byok.vhd import _xts"

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends qemu-utils \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 byok \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin byok \
    && mkdir -p /var/lib/byok/results /opt/byok-flows \
    && chown 10001:10001 /var/lib/byok/results
COPY --from=build /opt/venv /opt/venv
# The deployments' pull step changes to BYOK_FLOWS_DIR (empty: the package is in the venv).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BYOK_FLOWS_DIR=/opt/byok-flows
WORKDIR /opt/byok-flows
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
CMD ["python", "-c", "from byok.vhd.xts import BACKENDS; print('byok-flows, XTS:', BACKENDS)"]
