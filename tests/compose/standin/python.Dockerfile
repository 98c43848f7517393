# TEST ONLY: a local stand-in for python:3.11.x-slim-bookworm, for `make compose-test` where no registry is
# reachable. Debian bookworm (debootstrap --variant=minbase, imported as BASE) + Debian's Python 3.11, venv and
# `python` on PATH, like the official image. It also trusts the host's extra CA certificates (certs/, copied from
# /usr/local/share/ca-certificates by the test): HTTPS from containers passes a TLS-intercepting proxy on the
# build machines. The shipped Dockerfiles never do that; only this stand-in does.
ARG BASE=textclf-standin/debian:bookworm
FROM ${BASE}
# Test stand-in: whatever bookworm ships today (the real images pin their base by tag).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
# pip's own certificate bundle would not hold the proxy's CA: point pip and Python's ssl at the system store.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Inherited by every image built on this one: `make compose-test` prunes the untagged ones by it.
LABEL org.textclf.standin="Debian python3 3.11, not the upstream python image"
CMD ["python3"]
