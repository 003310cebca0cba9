"""A real uvicorn server on a free local port around `pipeline.serving.app`, in a thread of the test process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from pipeline.inference import restore_image
from pipeline.models import ModelSpec, build_model
from pipeline.serving.app import ServeLimits, create_app


@contextmanager
def running_app(app):
    """Serve `app` on 127.0.0.1:<free port> until the block ends; yields the base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="module")
def tiny_net():
    return build_model(ModelSpec("unet", 8, 2), seed=0).eval()


@pytest.fixture
def serve_app(tiny_net):
    """A factory: (limits, restore wrapper) → base URL of a running app on the tiny U-Net, tiled at 64."""
    stack = []

    def start(limits: ServeLimits = ServeLimits(), wrap=None):
        def restore(image, should_stop):
            return restore_image(tiny_net, image, "cpu", 64, 8, should_stop=should_stop)

        info = {"source": "tests", "name": "tiny", "version": None, "alias": None, "metrics": {}, "architecture": "unet"}
        context = running_app(create_app(wrap(restore) if wrap else restore, info, limits))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in stack:
        context.__exit__(None, None, None)


@pytest.fixture
def client():
    with httpx.Client(timeout=60) as http:
        yield http


def start_server(model, tmp_path, *options):
    """`demoire serve` on a free port, as a user starts it; returns (process, base URL)."""
    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model), "--port", "0",
                                "--device", "cpu", *options], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                               cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", log.read_text())
        if found:
            return process, found[1]
        if process.poll() is not None:
            raise RuntimeError(f"demoire serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("demoire serve did not start within 90 s")
