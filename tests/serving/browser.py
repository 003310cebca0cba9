"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP API (a few calls with httpx)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900"]


def chromium_paths() -> tuple[str | None, str | None]:
    """Debian's chromium and chromium-driver, if installed."""
    return shutil.which("chromium"), shutil.which("chromedriver")


class Browser:
    """One chromedriver process and one browser session; close() ends both (by process id)."""

    def __init__(self, profile: Path, log: Path):
        chromium, driver = chromium_paths()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self._log = open(log, "w")
        self._driver = subprocess.Popen([driver, f"--port={port}"], stdout=self._log, stderr=subprocess.STDOUT)
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromedriver did not start: {log.read_text()[-1000:]}")
            time.sleep(0.1)
        options = {"binary": chromium, "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        self.session = self._call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        response = self._http.request(method, path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise RuntimeError(f"webdriver {method} {path}: {value.get('error')}: {value.get('message', '')[:500]}")
        return value

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self._session("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def upload(self, css: str, *files: Path) -> None:
        """Choose files in an <input type=file>, as a person picking them in the dialog."""
        self._session("POST", f"/element/{self.find(css)}/value", {"text": "\n".join(str(f) for f in files)})

    def run(self, script: str, *args):
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 60):
        """Poll a JavaScript expression (`return …`) until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.run(script)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"still false after {timeout} s: {script}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._session("DELETE", "")
        finally:
            self._http.close()
            self._driver.terminate()
            self._driver.wait(timeout=20)
            self._log.close()
