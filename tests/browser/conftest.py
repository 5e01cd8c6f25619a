"""Fixtures of the real-browser suite: one JupyterLab server and one headless Chromium for the session.

The suite runs only through `make test-browser` (which sets RBDLIB_BROWSER=1, installs Debian's chromium
and Playwright): a plain `pytest tests` or `make test` does not collect it.

Everything started here is stopped here, by its own handle: the server by the PID this fixture got from
Popen, its kernels by deleting their sessions through the server's REST API. The browser is Playwright's
own child. Nothing is stopped by name.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("RBDLIB_BROWSER") != "1":
    collect_ignore_glob = ["test_*.py"]   # `make test-browser` sets RBDLIB_BROWSER=1

REPO = Path(__file__).parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = Path(os.environ.get("RBDLIB_BROWSER_ARTIFACTS", REPO / "build" / "browser"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1 serving a scratch copy of the notebooks (so autosave never
    touches the committed ones), with RBDLIB_SMOKE=1 in its kernels' environment."""

    def __init__(self, workdir: Path):
        self.root = workdir / "notebooks"
        self.root.mkdir()
        for path in NOTEBOOKS:
            shutil.copy(path, self.root)
        settings = workdir / "settings"
        # every cell rendered (no virtual scrolling), no news or update checks
        _write(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
               {"windowingMode": "none"})
        _write(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
               {"fetchNews": "false", "checkForUpdates": False})
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, RBDLIB_SMOKE="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"), JUPYTER_RUNTIME_DIR=str(workdir / "runtime"))
        self.log = workdir / "server.log"
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--port-retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
             "--LabApp.expose_app_in_browser=True", "--allow-root"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("GET", "status")
                break
            except OSError as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {self.log}:\n"
                                       f"{self.log.read_text()[-3000:]}") from error
                time.sleep(0.5)

    def api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def delete_sessions(self):
        """Shut down every kernel this server started (closing a page does not)."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")

    def stop(self):
        try:
            self.delete_sessions()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def _write(path: Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.fail("no chromium on PATH: `make test-browser` installs Debian's (apt-get install chromium)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []   # Chromium's sandbox refuses to run as root
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
