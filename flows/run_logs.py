"""User errors in Prefect's run logs as one line: in stage commands and in deployments' flow runs alike.

Prefect logs a failed task or flow run with its traceback; for a user error (DemoireError: bad input,
missing folder) the one-line message is the whole story.
"""

from __future__ import annotations

import logging

from pipeline.errors import DemoireError, ServiceUnavailableError

PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.engine")


def user_errors_without_traceback(record: logging.LogRecord) -> bool:
    """Drop the traceback from a log record of a DemoireError; keep the record."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, DemoireError):
        record.exc_info, record.exc_text = None, None
        record.msg, record.args = f"{record.getMessage().splitlines()[0]} error: {error}", ()
    return True


def quiet_user_error_tracebacks() -> None:
    """Install the filter on Prefect's run loggers (once per process)."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if user_errors_without_traceback not in logger.filters:
            logger.addFilter(user_errors_without_traceback)


def unless_user_error(task, task_run, state) -> bool:
    """A task's `retry_condition_fn`: retry what may pass (a store or server hiccup, a busy registry), not a
    user error, which would only fail again, and log its line again, after the retry delays."""
    return isinstance(state.data, ServiceUnavailableError) or not isinstance(state.data, DemoireError)
