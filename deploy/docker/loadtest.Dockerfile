# The load generator for `docker compose --profile loadtest up locust`: Locust + the project's load test.
#
#   docker build -f deploy/docker/loadtest.Dockerfile -t textclf-loadtest:0.1.0 .
#
# LOADTEST_MODE=ui (default) serves Locust's web UI on :8089; LOADTEST_MODE=headless runs `python -m loadtest.run`
# for LOADTEST_DURATION and exits non-zero when the SLO gate (loadtest/slo.yaml) fails; its reports go to
# /app/reports/loadtest/<UTC timestamp>/.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# The requirement list alone, in its own stage: the dependency layer below is cached on this file's content, so
# edits to other parts of pyproject.toml do not reinstall it.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['loadtest']))" > requirements.txt

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
COPY --from=requirements /src/requirements.txt /tmp/loadtest-requirements.txt
COPY constraints.txt ./
RUN python -m venv /opt/venv \
 && pip install --constraint constraints.txt --requirement /tmp/loadtest-requirements.txt
COPY core/ core/
COPY loadtest/ loadtest/
# Run through sh rather than COPY --chmod (BuildKit only), so the classic builder builds this image too.
COPY deploy/docker/locust-entrypoint.sh /usr/local/bin/locust-entrypoint.sh
RUN groupadd --system --gid 10001 textclf \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin textclf \
 && mkdir -p /app/reports \
 && chown 10001:10001 /app/reports
# Headless runs write reports/loadtest/<timestamp>/ here; compose mounts a volume (`docker compose cp` reads it).
VOLUME ["/app/reports"]
USER 10001:10001
EXPOSE 8089
ENTRYPOINT ["/bin/sh", "/usr/local/bin/locust-entrypoint.sh"]
