"""The reader's path through `make lab`, in a real browser.

`make lab` is started as the Makefile defines it (the project's JupyterLab settings, --allow-root
when run as root), on a temporary copy of the chapters and with temporary Jupyter user folders,
so nothing of the reader's is written. The system Chromium, driven by Playwright, double-clicks
the einops primer in the file browser and must get a notebook (not the Markdown editor); it
runs the first code cells, reads their outputs, and finds the chapter's math typeset (KaTeX
elements, as jupyterlab-myst renders Markdown cells), not raw TeX.

Needs Chromium (the system package; `.ci/run` installs it) and the `playwright` package (the
test extra); without them the test is skipped and pytest's summary says why.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ("primer", "einops.md")
FIRST_CODE_CELLS = 3
# The system Chromium as the README's test command finds it; `playwright install` is never needed.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_processes(marker: str) -> list[int]:
    """Live processes whose command line names `marker` (the test's temporary folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(l for l in (entry / "status").read_text().splitlines() if l.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if marker in cmdline and "zombie" not in state:
            pids.append(int(entry.name))
    return pids


def _lab_env(home: Path) -> dict[str, str]:
    """The reader's environment with every Jupyter user folder moved into the test's `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    return env


@pytest.fixture
def chromium():
    """The system Chromium and Playwright's API, or a skip that says which is missing."""
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the browser test of `make lab` did not run")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    return path, sync_api


@pytest.fixture
def lab(chromium, lab_server):
    """`make lab` on a copy of the chapters, for the browser; yields (url, log)."""
    base, token, log_path = lab_server
    return f"{base}/lab?token={token}", log_path


@pytest.fixture
def lab_server(tmp_path):
    """`make lab` on a copy of the chapters (in tmp_path/chapters); yields (base url, token, log);
    stops it and everything it started."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed: cannot start `make lab`")
    if not (ROOT / ".venv/bin/jupyter").exists():
        pytest.skip("`make lab` needs the project's environment .venv (`make install`)")
    chapters = tmp_path / "chapters"
    shutil.copytree(ROOT / "chapters", chapters)
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log_path = tmp_path / "lab.log"
    with open(log_path, "wb") as log:
        # -o: never (re)install from inside a test; the test command has just installed.
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "lab", f"LAB_DIR={chapters}", f"LAB_ARGS={args}"],
            cwd=ROOT, env=_lab_env(tmp_path / "home"), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"`make lab` did not serve on port {port}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
        yield base, token, log_path
    finally:
        try:  # the server stops its kernels, then exits; make exits with it
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"), timeout=5)
            proc.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Anything still running that names the temporary folder was started here (a kernel runs
        # in a session of its own, the browser's helpers in theirs): stop it, then check.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _own_processes(str(tmp_path))
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if pids:
                time.sleep(1)
        left = _own_processes(str(tmp_path))
        assert not left, f"processes left behind: {left}"


def test_make_lab_ships_the_notebook_viewer_and_runs_as_root():
    """Without a browser: the setting names jupytext's notebook, and `make lab` installs it and
    passes --allow-root exactly when run as root."""
    settings = json.loads((ROOT / "tools/lab/overrides.json").read_text())
    assert settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["markdown"] == "Jupytext Notebook"
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "lab"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "cp tools/lab/overrides.json .venv/share/jupyter/lab/settings/overrides.json" in dry
    assert ("--allow-root" in dry) == (os.geteuid() == 0)


def test_a_double_click_opens_a_chapter_as_a_notebook_that_runs(chromium, lab, tmp_path):
    executable, sync_api = chromium
    url, log_path = lab
    console: list[str] = []

    def diagnosis() -> str:
        messages = [m for m in console if not m.startswith("debug")]
        return (f"\n(screenshot: {tmp_path / 'lab.png'})\nbrowser console:\n" + "\n".join(messages[-25:])
                + "\nlab log:\n" + log_path.read_text()[-2000:])

    with sync_api.sync_playwright() as pw:
        # A fresh profile, and a home of its own for what Chromium writes beside the profile
        # (crash reports, dconf): nothing lands in the reader's ~/.config or ~/.cache.
        home = tmp_path / "chromium-home"
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900},
            env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                 "XDG_CACHE_HOME": str(home / ".cache")},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.set_default_timeout(30_000)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text[:300]}"))
            page.goto(url)

            def open_item(name: str) -> None:
                label = page.locator(".jp-DirListing-itemText", has_text=re.compile(rf"^{re.escape(name)}$"))
                page.locator(".jp-DirListing-item").filter(has=label).dblclick()

            open_item(CHAPTER[0])
            open_item(CHAPTER[1])

            # A notebook, not the Markdown editor.
            panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            try:
                panel.locator(".jp-Cell").first.wait_for()
            except sync_api.TimeoutError:
                kinds = page.locator(".jp-MainAreaWidget:not(.lm-mod-hidden)").evaluate_all(
                    "els => els.map(e => e.className)")
                pytest.fail(f"{CHAPTER[1]} did not open as a notebook; the main area shows {kinds}" + diagnosis())
            assert page.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .jp-FileEditor").count() == 0

            # Its kernel starts by itself (the chapter names it); then the first code cells run, in
            # order, and the second one's value is shown.
            idle = page.locator("#jp-main-statusbar").get_by_text(re.compile(r"Python 3.*\| Idle"))
            try:
                idle.wait_for(timeout=60_000)
            except sync_api.TimeoutError:
                pytest.fail("the chapter's kernel did not start" + diagnosis())
            cells = panel.locator(".jp-CodeCell")
            for i in range(FIRST_CODE_CELLS):
                cells.nth(i).locator(".jp-InputArea-editor").click()
                page.keyboard.press("Shift+Enter")
            for i in range(FIRST_CODE_CELLS):
                prompt = cells.nth(i).locator(".jp-InputArea-prompt")
                try:
                    sync_api.expect(prompt).to_have_text(f"[{i + 1}]:", timeout=60_000)
                except AssertionError as e:
                    pytest.fail(f"code cell {i + 1} did not run: {e}" + diagnosis())
            assert "torch.Size([2, 8])" in cells.nth(1).locator(".jp-OutputArea-output").inner_text()
            errors = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()

            # The chapter's math is typeset, not left as raw TeX: jupyterlab-myst renders Markdown
            # cells with KaTeX (JupyterLab's own renderer would use MathJax; either counts).
            math_cell = panel.locator(".jp-MarkdownCell", has_text="softmax").first
            math_cell.scroll_into_view_if_needed()
            typeset = math_cell.locator(".katex-html, mjx-container")
            try:
                sync_api.expect(typeset.first).to_be_visible()
            except AssertionError:
                pytest.fail("the chapter's math is not typeset" + diagnosis())
            assert typeset.count() >= 2, typeset.count()
            assert "$" not in math_cell.locator(".myst, .jp-RenderedMarkdown").first.inner_text()
        finally:
            try:
                page.screenshot(path=str(tmp_path / "lab.png"))  # what the browser showed last
            finally:
                browser.close()
