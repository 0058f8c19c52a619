"""Logging: moa_lab's own logger ("moa_lab") and ``moa-lab -v``, which shows it and the HTTP libraries' logs.

Every record that goes through :func:`verbose` is scrubbed of the API key first (message, arguments and
traceback): a server that echoes the Authorization header in an error, or a library that logs a request,
cannot put the key into a log.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("moa_lab")

#: Every API key moa_lab holds (registered by :func:`moa_lab.get_backend`), scrubbed from every log line.
SECRETS: set[str] = set()

#: The loggers ``-v`` shows: ours, the together SDK's, and the HTTP stack under it.
VERBOSE_LOGGERS = ("moa_lab", "together", "httpx", "httpcore")


class Redact(logging.Filter):
    """Replace every secret in a record's final text (message and traceback) with ``***``."""

    def __init__(self, *secrets: str | None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        for secret in (*self.secrets, *SECRETS):
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


def verbose(level: int = logging.DEBUG, stream=None) -> logging.Handler:
    """Show moa_lab's and the HTTP libraries' logs on ``stream`` (stderr), the API key scrubbed from each."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.addFilter(Redact(os.environ.get("TOGETHER_API_KEY")))
    for name in VERBOSE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
    return handler
