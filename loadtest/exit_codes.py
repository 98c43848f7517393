"""Exit codes of ``make loadtest`` (``python -m loadtest.run``) and the SLO gate (``python -m loadtest.slo``).

One code per outcome, so a script or CI job can tell a slow service from a broken setup without parsing text.
2 is left to argparse, which uses it for a bad command line.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a load-test run ended with."""

    SLO_MET = 0
    """Every bound in the SLO file was met."""
    SLO_MISSED = 1
    """At least one bound was missed; the last line printed names each one."""
    USAGE = 2
    """Bad command-line arguments (argparse's own code)."""
    INVALID_SLO = 3
    """The SLO file is missing, not YAML, or a field is missing, unknown or not a valid number."""
    NOT_READY = 4
    """The service's ``/health/ready`` did not answer 200 within ``--ready-timeout``."""
    UNAUTHORIZED = 5
    """The service answered 401/403: it needs an API key and none (or a wrong one) is configured, or
    ``TEXTCLF_API_KEY_FILE`` cannot be read."""
    LOAD_FAILED = 6
    """Locust exited with an error or left no usable stats CSV."""
