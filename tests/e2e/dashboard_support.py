"""The dashboard in a real browser for end-to-end tests: `drover dashboard` as a subprocess
(the local proxy with a kubeconfig's credentials), and Debian's Chromium driven by
Playwright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import E2ECluster

DROVER = Path(sys.executable).parent / "drover"
#: Debian's Chromium (scripts/bootstrap.sh installs it); Playwright's own builds are never
#: downloaded.
CHROMIUM = "/usr/bin/chromium"


class Dashboard:
    """`drover dashboard --no-open` for one kubeconfig, and its URL."""

    def __init__(self, cluster: E2ECluster, kubeconfig: Path, namespace: str) -> None:
        self.proc = subprocess.Popen(
            [
                str(DROVER),
                "dashboard",
                "--no-open",
                "--kubeconfig",
                str(kubeconfig),
                "-n",
                namespace,
            ],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = cast(IO[str], self.proc.stdout).readline()
        if not line.startswith("Drover dashboard: "):
            self.stop()
            raise AssertionError(f"drover dashboard printed {line!r}: {self.proc.stderr}")
        self.url = line.removeprefix("Drover dashboard: ").strip()
        # http://127.0.0.1:PORT/apis/api.drover.dev/v1/ui/runs?namespace=NS
        self.root = self.url.split("/runs?")[0]

    def page_url(self, path: str) -> str:
        return f"{self.root}/{path.lstrip('/')}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Viewer:
    """A browser page as one identity, recording what the Content-Security-Policy refused."""

    def __init__(self, browser: Browser, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.violations: list[str] = []
        self.page.on("console", self._console)
        self.page.on("dialog", lambda dialog: dialog.accept())

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def open(self, path: str) -> Page:
        self.page.goto(self.dashboard.page_url(path))
        return self.page

    def close(self) -> None:
        self.context.close()
