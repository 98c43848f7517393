#!/bin/sh
# Entry point of the loadtest image. LOADTEST_MODE selects Locust's web UI or a headless run with the SLO gate.
set -eu

target="${LOADTEST_TARGET:-http://api:8000}"
users="${LOADTEST_USERS:-16}"
spawn_rate="${LOADTEST_SPAWN_RATE:-8}"
duration="${LOADTEST_DURATION:-60s}"

case "${LOADTEST_MODE:-ui}" in
  headless)
    # Exits non-zero when a loadtest/slo.yaml objective is missed, so `docker compose run` can gate on it.
    exec python -m loadtest.run --host "$target" --users "$users" --spawn-rate "$spawn_rate" --duration "$duration" \
      --out /app/reports/loadtest "$@"
    ;;
  ui)
    exec locust -f /app/loadtest/locustfile.py --host "$target" --web-host 0.0.0.0 --web-port 8089 \
      --users "$users" --spawn-rate "$spawn_rate" "$@"
    ;;
  *)
    echo "LOADTEST_MODE must be 'ui' or 'headless', got '${LOADTEST_MODE}'" >&2
    exit 2
    ;;
esac
