"""`python -m flows.server_check`: whether PREFECT_API_URL answers as a Prefect API (`make deploy`'s first step).

Without it, `prefect deploy` against no server printed a 73-line traceback, and against a URL without `/api`
only `Not Found`.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def problem_with(url: str, timeout_s: float = 10.0) -> str | None:
    """Why the Prefect API at `url` cannot be used, in one line; None when its health check answers."""
    example = "e.g. http://127.0.0.1:4200/api (make server)"
    if not url:
        return f"set PREFECT_API_URL, {example}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return f"{url} answers, but not as a Prefect API: PREFECT_API_URL ends in /api, {example}"
        return f"the Prefect API at {url} answered HTTP {exc.code} to its health check"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no Prefect server answers at {url} ({reason}); start one (make server) or fix PREFECT_API_URL"


def main() -> None:
    problem = problem_with(os.environ.get("PREFECT_API_URL", ""))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
