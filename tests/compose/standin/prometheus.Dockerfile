# TEST ONLY: a local stand-in for the compose file's prom/prometheus image, for `make compose-test` where no
# registry is reachable: Debian bookworm's prometheus package (2.42) + wget for the compose healthcheck, laid out
# like the official image (entry point, /prometheus owned by nobody, runs as nobody).
ARG BASE=textclf-standin/debian:bookworm
FROM ${BASE}
# Test stand-in: whatever bookworm ships today (the real images pin their base by tag).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown 65534:65534 /prometheus
LABEL org.textclf.standin="Debian prometheus package, not the upstream image"
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
