"""`python -m flows.server_check [--pool NAME]`: whether PREFECT_API_URL answers as a Prefect API (`make deploy`'s
first step), and holds the work pool NAME (`make worker`'s).

Without it, `prefect deploy` against no server printed a 73-line traceback, and against a URL without `/api`
only `Not Found`; `prefect worker start` for a mistyped pool creates that pool and waits on it for good.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
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


def pool_problem(url: str, pool: str, timeout_s: float = 10.0) -> str | None:
    """Why no worker should start for `pool` on the Prefect API at `url` (it has no such pool), in one line naming
    the pools it has; None when the pool exists."""
    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/work_pools/{urllib.parse.quote(pool, safe='')}", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            return f"the Prefect API at {url} answered HTTP {exc.code} when asked for work pool {pool!r}"
    request = urllib.request.Request(f"{base}/work_pools/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        names = sorted(entry["name"] for entry in json.load(answer))
    return (f"no work pool {pool!r} on {url} (pools there: {', '.join(names) or 'none'}); `make deploy` creates cpu "
            "and gpu: start the worker with POOL=cpu or POOL=gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", help="also check that the server has this work pool")
    args = parser.parse_args()
    url = os.environ.get("PREFECT_API_URL", "")
    problem = problem_with(url) or (pool_problem(url, args.pool) if args.pool else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
