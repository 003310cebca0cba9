"""Serve the registered model over HTTP with bounds: `python -m pipeline.serving -m models:/demoire@champion`.

The app is MLflow's own scoring app (the `/invocations` API and JSON of `mlflow models serve`) behind
an ASGI layer that bounds each request:

- a body over `--max-body-mb` is refused with 413 before it is parsed (a 4000×4000 image as JSON is
  ~200 MB of text and several GB of Python objects once parsed);
- requests are restored one at a time, first come first served, so a big one cannot starve the
  others of the CPU; a request that waited longer than the time limit gets 503;
- a request's work stops (between tiles) when its time limit passes (504) or its client disconnects;
- SIGTERM stops accepting, stops the work in flight (answered 503) and exits;
- an error is answered with the model's own message: MLflow's would repeat the whole request in it.

The model itself refuses input of the wrong shape, dtype, range or size with 400
(pipeline.registry.pyfunc.checked_image), also under plain `mlflow models serve`, where it stops its
work once MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT has passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field

DEFAULT_MAX_BODY_MB = 64.0
DEFAULT_TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


@dataclass(eq=False)  # hashable by identity: the server keeps a set of the requests in flight
class RequestStop:
    """Tells a request's worker thread to stop, and the server when that thread is done."""

    deadline: float | None = None  # time.monotonic() after which the work stops
    reason: str = ""
    event: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)  # set by the model when its work begins
    finished: threading.Event = field(default_factory=threading.Event)  # ...and when it ends

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def is_set(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.set("the request's time limit passed")
        return self.event.is_set()


_CURRENT: contextvars.ContextVar[RequestStop | None] = contextvars.ContextVar("demoire_request_stop", default=None)


def request_stop() -> RequestStop:
    """The current request's stop signal (contextvars reach the thread MLflow predicts in). Outside this
    server, under `mlflow models serve`, a deadline of MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT; elsewhere none."""
    current = _CURRENT.get()
    if current is not None:
        return current
    if os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT") == "true":
        timeout = float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", DEFAULT_TIMEOUT_S))
        return RequestStop(deadline=time.monotonic() + timeout)
    return RequestStop()


async def _respond(send, status: int, message: str, error: dict | None = None) -> None:
    """An error answer in MLflow's JSON: `error`'s keys (MLflow's own) with `message`, else a code for `status`."""
    code = {413: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(status,
                                                                                                      "BAD_REQUEST")
    body = json.dumps({"error_code": code, **(error or {}), "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BoundedScoring:
    """ASGI middleware around MLflow's scoring app: body limit, one restoration at a time, time limit, cancel."""

    def __init__(self, app, max_body_bytes: int, timeout_s: float):
        self.app, self.max_body_bytes, self.timeout_s = app, max_body_bytes, timeout_s
        self.turn = asyncio.Lock()  # FIFO: waiters acquire in arrival order
        self.in_flight: set[RequestStop] = set()

    def stop_all(self, reason: str) -> None:
        for stop in list(self.in_flight):
            stop.set(reason)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _respond(send, 413, f"request body of {int(declared):,} bytes is over the limit of "
                                      f"{self.max_body_bytes:,} (--max-body-mb)")
            return
        chunks, size = [], 0
        while True:  # read it all, counting: a chunked body has no Content-Length to trust
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await _respond(send, 413, f"request body is over the limit of {self.max_body_bytes:,} bytes")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        stop = RequestStop(deadline=time.monotonic() + self.timeout_s)
        try:
            await asyncio.wait_for(self.turn.acquire(), timeout=self.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            await _respond(send, 503, f"busy: waited {self.timeout_s:g} s for a turn")
            return
        token = _CURRENT.set(stop)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the client to go away

        async def watch_disconnect():
            while (await receive())["type"] != "http.disconnect":
                pass
            stop.set("the client disconnected")

        self.in_flight.add(stop)
        watcher = asyncio.create_task(watch_disconnect())
        try:
            remaining = max(stop.deadline - time.monotonic(), 0.1)
            await asyncio.wait_for(self.app(scope, replay, _ErrorAnswer(send, stop)), timeout=remaining)
        except (asyncio.TimeoutError, TimeoutError):
            stop.set("the request's time limit passed")
            await _respond(send, 504, f"stopped after the time limit of {self.timeout_s:g} s")
        finally:
            watcher.cancel()
            _CURRENT.reset(token)
            # The turn is held until the worker thread has really stopped, so the next request gets the CPU.
            if stop.started.is_set():
                await asyncio.to_thread(stop.finished.wait, 30)
            self.in_flight.discard(stop)
            self.turn.release()


# What a request stopped for is answered with; MLflow would answer 429 (the model's REQUEST_LIMIT_EXCEEDED)
STOPPED_STATUS = {"the server is shutting down": 503, "the request's time limit passed": 504}
# MLflow's scoring app puts the whole request before the model's message ("Failed to predict data '<the
# input>'. \nError: <message>"): 7.2 MB of base64 for one refused 4000×3000 photo
MLFLOW_ECHO = "\nError: "
# ...and a body that is not JSON whole, after the parser's error, whose repr of a UnicodeDecodeError holds it too
MLFLOW_NOT_JSON = "Invalid input. Ensure that input is a valid JSON formatted string."
NOT_JSON = ("the request body is not JSON{where} (send {{\"inputs\": …}}: an array of 0–255 values or base64 of "
            "an image file)")
# an error message longer than this is cut: whatever else MLflow may repeat of a request stays out of the answer
MAX_MESSAGE_CHARS = 2000


class _ErrorAnswer:
    """The `send` of MLflow's app: a success passes as it is; an error answer is held and sent as the model's own
    message (without the request MLflow repeats in it), or as what the request was stopped for."""

    def __init__(self, send, stop: RequestStop):
        self.send, self.stop = send, stop
        self.status: int | None = None
        self.body = b""

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        if self.status is None or self.status < 400:
            await self.send(message)
            return
        if message["type"] == "http.response.start":
            return
        self.body += message.get("body", b"")
        if not message.get("more_body"):
            await _respond(self.send, *self.answer())

    def answer(self) -> tuple[int, str, dict | None]:
        """(status, message, MLflow's other keys) for the held error."""
        if self.stop.event.is_set():
            return STOPPED_STATUS.get(self.stop.reason, 503), f"stopped: {self.stop.reason}", None
        try:
            error = json.loads(self.body)
            message = str(error.pop("message"))
        except (ValueError, KeyError, TypeError, AttributeError):
            error, message = None, self.body.decode("utf-8", "replace")
        if error and error.get("stack_trace"):  # for whoever runs the server, not for its clients
            log.warning("the model failed on a request (%d): %s", self.status, error.pop("stack_trace"))
        return self.status, brief(message), error


def brief(message: str) -> str:
    """MLflow's error message without the request it repeats in it."""
    if message.startswith(MLFLOW_NOT_JSON):  # the parser's words, in the quotes its repr chose
        position = re.search(r"JSONDecodeError\((['\"])(.*?)\1\)", message)
        unicode = "UnicodeDecodeError" in message.split("\n", 1)[0]
        return NOT_JSON.format(where=f" ({position[2]})" if position else ": not UTF-8 text" if unicode else "")
    message = message.rsplit(MLFLOW_ECHO, 1)[-1]
    if len(message) > MAX_MESSAGE_CHARS:
        return f"{message[:MAX_MESSAGE_CHARS]}… ({len(message) - MAX_MESSAGE_CHARS} more characters cut)"
    return message


def build_app(model_uri: str, max_body_bytes: int, timeout_s: float) -> BoundedScoring:
    """MLflow's scoring app for the model at `model_uri`, bounded."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    os.environ.setdefault("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", str(int(timeout_s) + 30))  # ours answers first
    # Loaded from a copy of its own: without dst_path, MLflow writes registered_model_meta into a local artifact
    # store itself (serving only reads the registry). The copy stays while the server runs: MLflow puts its code/
    # folder on sys.path.
    files = tempfile.TemporaryDirectory(prefix="demoire-serving-")
    model = mlflow.pyfunc.load_model(model_uri, dst_path=files.name)
    app = BoundedScoring(scoring_server.init(model), max_body_bytes, timeout_s)
    app.model_files = files  # removed when the server ends
    return app


def serve(model_uri: str, host: str, port: int, max_body_mb: float, timeout_s: float) -> None:
    """Run the bounded server until SIGTERM or Ctrl-C; in-flight work is stopped, then the process exits."""
    import uvicorn

    app = build_app(model_uri, int(max_body_mb * 1024 * 1024), timeout_s)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.stop_all("the server is shutting down")
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5, log_level="info")).run()


def main() -> None:
    from pipeline.errors import DemoireError
    from pipeline.registry.store import check_server_answers, default_tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model-uri", default="models:/demoire@champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5001)
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request, waiting included")
    args = parser.parse_args()
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = default_tracking_uri(os.getcwd())
    mlflow.set_tracking_uri(uri)
    try:
        check_server_answers(uri)  # a dead server: one line now, not minutes of MLflow's retries
        serve(args.model_uri, args.host, args.port, args.max_body_mb, args.timeout)
    except (DemoireError, MlflowException) as exc:
        raise SystemExit(f"error: cannot serve {args.model_uri}: {str(exc).splitlines()[0]}") from None


if __name__ == "__main__":
    main()
