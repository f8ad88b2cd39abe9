"""JupyterLab in a real browser: run the listening notebook and hear a clip play; upload a sound.

nbval executes notebooks but never renders a widget, so it cannot see what a learner sees when
ipywidgets and the JupyterLab widget manager disagree ("Error displaying widget") or when the
browser cannot decode the audio the clip browser sends. These tests drive Debian's Chromium with
Playwright against a throw-away ``jupyter lab`` server:

- notebook 2 runs top to bottom, a clip plays, and changing the class in the clip browser changes
  the audio and the plot;
- the "classify your own sound" widget of notebook 5 (``real_sounds.SoundUploader``, here in a
  one-cell notebook with a quickly trained checkpoint, since notebook 5 trains for minutes) gets a
  real clip through its upload button and shows a top-3 prediction, then a corrupt file and shows
  what is wrong with it, then a real clip again.

Run it alone with ``pytest -m browser`` (the default run excludes it); ``.ci/install-browser``
installs Chromium and Playwright. Screenshots land in ``test-artifacts/browser/`` (git-ignored);
every failure message names the step and the screenshot taken at that moment.

``US8K_BROWSER_NOTEBOOK`` may point at another notebook to run instead of ``notebooks/02-*.ipynb``
(used to check that a broken widget makes this test fail).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Flags this machine needs: without the networking ones Chromium keeps dialling Google's hosts,
# which the closed network refuses; the autoplay one lets element.play() run without a click.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
# Generous for 2 shared cores, yet the whole test stays well under 3 minutes when all goes well.
SERVER_START_S = 60
PAGE_READY_S = 60
PAGE_STATUS_S = 20  # the toolbar follows the server's kernel status within a second or two
FIRST_CELL_S = 45  # from Run All to the kernel busy on the first cell (seconds when all is well)
RUN_ALL_S = 100
WIDGET_UPDATE_S = 30
AUDIO_S = 15


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require(ok: bool, reason: str) -> None:
    """Skip on a developer machine without the browser tooling; fail in CI, where it must be there."""
    if ok:
        return
    if _in_ci():
        pytest.fail(f"{reason} (CI=true, so this is an error: run .ci/install-browser first)", pytrace=False)
    pytest.skip(f"{reason}; install with: bash .ci/install-browser")


def _notebook_under_test() -> Path:
    override = os.environ.get("US8K_BROWSER_NOTEBOOK")
    if override:
        path = Path(override).expanduser().resolve()
        assert path.is_file(), f"US8K_BROWSER_NOTEBOOK={override}: no such notebook"
        return path
    found = sorted((REPO / "notebooks").glob("02-*.ipynb"))
    assert found, f"{REPO / 'notebooks'}: no listening notebook matching 02-*.ipynb"
    return found[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_without_outputs(src: Path, dest_dir: Path) -> Path:
    """Copy a notebook with outputs and saved widget state removed.

    Committed outputs (including a saved widget state that renders players without a kernel)
    would let the checks pass on stale results; a cleared copy proves this run produced them,
    and serving a copy guarantees the committed notebook is never saved over.
    """
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    dest = dest_dir / src.name
    dest.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return dest


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for the throw-away lab.

    Every cell in the DOM (no virtual scrolling hiding the widget), start the notebook's kernel
    without asking, no toasts, no news or update requests, no autosave.
    """
    overrides = {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
        "@jupyterlab/apputils-extension/notification": {
            "checkForUpdates": False,
            "doNotDisturbMode": True,
            "fetchNews": "false",
        },
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    }
    for plugin, values in overrides.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


@dataclass
class LabServer:
    """A running ``jupyter lab`` and where to reach it."""

    url: str
    token: str
    root: Path
    notebook: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    #: Where the server log is kept after the test, beside the screenshots.
    kept_log: Path = ARTIFACTS / "jupyter-lab.log"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _api(url: str, token: str, method: str = "GET", timeout: float = 5) -> Any:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _stop_server(proc: subprocess.Popen[bytes], base: str, token: str) -> None:
    """Shut the server down through its API (which stops its kernels), then kill what is left."""
    if proc.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            _api(f"{base}/api/shutdown", token, method="POST")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    # Kernels run in their own sessions; whatever the API did not stop, signal the group anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _require_browser() -> None:
    _require(CHROMIUM.is_file(), f"{CHROMIUM} not found")
    _require(importlib.util.find_spec("playwright") is not None, "Python package playwright not installed")


@pytest.fixture()
def lab_server(tmp_path: Path) -> Iterator[LabServer]:
    """A ``jupyter lab`` on a free loopback port, serving a cleared copy of the notebook; always stopped."""
    _require_browser()
    notebook = _notebook_under_test()
    # The notebook picks its dataset with resolve_root(), generating the mini one on first use
    # (tens of seconds); do that here, so the browser steps time only the notebook itself.
    from us8k_lib.paths import resolve_root

    resolve_root(verbose=False)
    root = tmp_path / "root"
    root.mkdir()
    with _serve(tmp_path, root, _copy_without_outputs(notebook, root)) as server:
        yield server


@contextlib.contextmanager
def _serve(tmp_path: Path, root: Path, copy: Path, log_name: str = "jupyter-lab.log") -> Iterator[LabServer]:
    """Run ``jupyter lab`` over ``root`` (which holds the notebook ``copy``) until the block ends;
    its log is then kept as ``ARTIFACTS/log_name``."""
    settings = tmp_path / "lab-settings"
    _write_lab_settings(settings)
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    # CI exports MPLBACKEND=Agg for headless scripts; the kernel would inherit it and plt.show()
    # would draw nothing. A learner's JupyterLab has the inline backend, so test with that.
    env.pop("MPLBACKEND", None)
    port, token = _free_port(), os.urandom(16).hex()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyter-lab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:  # CI containers run as root; jupyter refuses that unless told
        cmd.append("--allow-root")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(url=base, token=token, root=root, notebook=copy, log=log, proc=proc,
                       kept_log=ARTIFACTS / log_name)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"step 'start jupyter lab': server exited with code {proc.returncode}; "
                    f"log {log}:\n{server.log_tail()}",
                    pytrace=False,
                )
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                _api(f"{base}/api/status", token, timeout=2)
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"step 'start jupyter lab': /api/status did not answer within {SERVER_START_S} s; "
                    f"log {log}:\n{server.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop_server(proc, base, token)
        # Keep the server log with the screenshots: it is the first thing to read after a failure.
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, server.kept_log)


class Steps:
    """Named test steps: on any failure, screenshot the page and fail naming the step and the image."""

    def __init__(self, page: Page, server: LabServer) -> None:
        self.page = page
        self.server = server
        self.console: list[str] = []
        #: What a failure screenshot should show, when it exists (set once the clip browser is known).
        self.focus: Locator | None = None
        page.on("console", lambda m: m.type == "error" and self.console.append(f"error: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
            # Shown with pytest -s, and under "Captured stdout" when a later step fails.
            print(f"[browser] {time.monotonic() - started:5.1f} s  {name}")
        except Exception as exc:  # includes AssertionError and Playwright timeouts
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            with contextlib.suppress(Exception):  # best effort: the screenshot matters more
                if self.focus is not None and self.focus.count() > 0:
                    self.focus.scroll_into_view_if_needed(timeout=2000)
            try:
                where = str(self.shot(f"FAILED-{slug}"))
            except Exception as shot_exc:  # the failure message matters more than the image
                where = f"(screenshot failed: {shot_exc})"
            console = "\n".join(self.console[-10:]) or "(none)"
            # pytest's assertion rewriting appends "assert ..." lines that repeat the message.
            detail = str(exc).split("\nassert ")[0]
            message = (
                f"step '{name}' failed: {detail}\n"
                f"screenshot: {where}\n"
                f"browser console errors (last 10):\n{console}\n"
                f"jupyter lab log (kept as {self.server.kept_log}), last lines:\n{self.server.log_tail(10)}"
            )
            raise pytest.fail.Exception(message, pytrace=False) from None  # the message says it all


def _wait_for(
    predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.25
) -> Any:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Fails after ``timeout`` seconds naming ``what`` (a callable is asked at that moment, so the
    message can describe the state the page was left in).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described}")
        time.sleep(interval)


# State of every code cell: its prompt ("[ ]:", "[*]:", "[3]:"), whether it has source, and its
# stderr text (JupyterLab renders a traceback as stderr, so that is where an error shows).
_CELLS_JS = """
() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')).map((cell, index) => ({
    index,
    prompt: (cell.querySelector('.jp-InputPrompt')?.textContent || '').trim(),
    hasSource: (cell.querySelector('.jp-InputArea-editor')?.textContent || '').trim().length > 0,
    stderr: Array.from(cell.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
        .map(e => e.textContent).join('\\n'),
}))
"""

# Snapshot of the clip browser cell: player URLs, and a digest of the bytes behind every player
# and every plotted image (a widget update always mints a new blob: URL, so URLs alone cannot
# show that the content changed). Returns null while a URL cannot be read (e.g. just revoked).
_WIDGET_JS = """
async (cell) => {
    const digest = async (url) => {
        const bytes = await (await fetch(url)).arrayBuffer();
        if (bytes.byteLength === 0) return '';
        const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
        return Array.from(hash.slice(0, 8), b => b.toString(16).padStart(2, '0')).join('')
            + ` (${bytes.byteLength} bytes)`;
    };
    const audios = Array.from(cell.querySelectorAll('audio'));
    const images = Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).filter(i => i.src);
    const canvases = Array.from(cell.querySelectorAll('.jp-OutputArea-output canvas'));
    try {
        return {
            audioSrc: audios.map(a => a.currentSrc || a.src || ''),
            audio: await Promise.all(audios.map(a => a.currentSrc || a.src).map(u => u ? digest(u) : '')),
            plots: [
                ...await Promise.all(images.map(i => digest(i.src))),
                ...canvases.map(c => c.toDataURL()),
            ].filter(p => p),
        };
    } catch (e) {
        return null;
    }
}
"""

# Wait for the audio element's metadata (or its error) and report what the browser made of it.
_AUDIO_META_JS = """
(audio, timeoutMs) => new Promise(resolve => {
    const report = () => ({
        src: audio.currentSrc || audio.src || '',
        duration: audio.duration,
        readyState: audio.readyState,
        error: audio.error ? `code ${audio.error.code}: ${audio.error.message || ''}` : null,
    });
    if (audio.error || audio.readyState >= 1) { resolve(report()); return; }
    audio.addEventListener('loadedmetadata', () => resolve(report()), {once: true});
    audio.addEventListener('error', () => resolve(report()), {once: true});
    if (audio.preload === 'none') audio.load();
    setTimeout(() => resolve(report()), timeoutMs);
})
"""


# The bytes behind the player's URL: the MIME type the page declared and the first bytes.
_AUDIO_BYTES_JS = """
async (audio) => {
    const blob = await (await fetch(audio.currentSrc || audio.src)).blob();
    const head = new Uint8Array(await blob.slice(0, 12).arrayBuffer());
    return {type: blob.type, size: blob.size, head: Array.from(head)};
}
"""

# Declared MIME types that honestly describe each container (what ipywidgets.Audio's
# ``format`` becomes: ``audio/<format>``).
_MIME_FOR = {
    "wav": {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"},
    "mpeg": {"audio/mpeg", "audio/mp3"},
    "ogg": {"audio/ogg"},
    "flac": {"audio/flac", "audio/x-flac"},
}


def _container(head: bytes) -> str | None:
    """Name the audio container from its magic bytes, or None if unrecognised."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mpeg"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    return None


def _check_audio(audio: Locator, label: str) -> dict[str, Any]:
    """Assert the player holds decodable audio whose declared type matches its bytes."""
    meta = audio.evaluate(_AUDIO_META_JS, AUDIO_S * 1000)
    assert re.match(r"^(blob|data):", meta["src"]), f"{label}: <audio> src is not a data:/blob: URL: {meta['src']!r}"
    assert meta["error"] is None, f"{label}: the browser could not load the audio: {meta['error']}"
    duration = meta["duration"]
    assert isinstance(duration, (int, float)) and duration > 0, (
        f"{label}: <audio> duration is {duration!r} after loadedmetadata (readyState {meta['readyState']})"
    )
    # Chromium sniffs the content and plays WAV bytes labelled audio/mp3; other browsers and
    # download links trust the label, so a label that lies about the bytes is a bug here too.
    body = audio.evaluate(_AUDIO_BYTES_JS)
    head = bytes(body["head"])
    kind = _container(head)
    assert kind is not None, f"{label}: the audio bytes are no known container (first bytes {head!r})"
    assert body["type"] in _MIME_FOR[kind], (
        f"{label}: the player declares {body['type']!r} but its {body['size']} bytes are {kind.upper()} "
        f"(first bytes {head!r}); ipywidgets.Audio(format=...) must name the bytes' format"
    )
    return meta


# Every widget that failed to render: JupyterLab's "Error displaying widget" (e.g. a widget
# model/view version the installed jupyterlab_widgets does not provide) and ipywidgets' error
# view for a child widget that failed (it reveals its message when clicked).
_WIDGET_ERRORS_JS = """
() => {
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        if (walker.currentNode.textContent.includes('Error displaying widget')) {
            found.push(walker.currentNode.parentElement.textContent.trim().slice(0, 400));
        }
    }
    for (const el of document.querySelectorAll('.jupyter-widgets-error-widget')) {
        el.click();
        found.push('widget error view: ' + el.innerText.trim().replace(/\\s+/g, ' ').slice(0, 400));
    }
    // Bring the first broken widget into view for the failure screenshot.
    const first = document.querySelector('.jupyter-widgets-error-widget, .jp-OutputArea-output .jupyter-widgets');
    if (found.length && first) first.scrollIntoView({block: 'center'});
    return found;
}
"""


def _assert_no_widget_errors(page: Page) -> None:
    errors = page.evaluate(_WIDGET_ERRORS_JS)
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    details = "\n".join(f"  {n} x {error}" for error, n in counts.items())
    assert not errors, f"{len(errors)} widget(s) failed to display:\n{details}"


def _kernel_ready(server: LabServer) -> bool:
    """True once the server reports an idle kernel for the notebook with the page connected to it."""
    try:
        sessions = _api(f"{server.url}/api/sessions", server.token)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return any(
        s.get("path", "").endswith(server.notebook.name)
        and (s.get("kernel") or {}).get("execution_state") == "idle"
        and (s.get("kernel") or {}).get("connections", 0) >= 1
        for s in sessions
    )


_INDICATOR = ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"


def _page_kernel_status(page: Page) -> str:
    """The kernel status the notebook toolbar shows (its indicator's data-status), or '(none)'."""
    indicator = page.locator(_INDICATOR).first
    if indicator.count() == 0:
        return "(none)"
    return indicator.get_attribute("data-status") or "(none)"


def _page_kernel_idle(page: Page) -> bool:
    return _page_kernel_status(page) == "idle"


def _wait_page_kernel_idle(page: Page, server: LabServer) -> None:
    """Wait for the notebook to render and the server to report its kernel idle with the page
    connected, then give the toolbar up to PAGE_STATUS_S to show it (no failure if it does not)."""
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(state="visible", timeout=PAGE_READY_S * 1000)
    _wait_for(
        lambda: _kernel_ready(server),
        PAGE_READY_S,
        "the notebook's kernel to start, go idle and have the page connected (GET /api/sessions)",
        interval=0.5,
    )
    with contextlib.suppress(AssertionError):
        _wait_for(lambda: _page_kernel_idle(page), PAGE_STATUS_S, "the toolbar's kernel status", interval=0.5)


def _run_all(page: Page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()


def _server_kernel_state(server: LabServer) -> str:
    """The execution state the server reports for the notebook's kernel (GET /api/sessions)."""
    try:
        sessions = _api(f"{server.url}/api/sessions", server.token)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return f"(no answer: {exc})"
    states = [(s.get("kernel") or {}).get("execution_state", "?") for s in sessions
              if s.get("path", "").endswith(server.notebook.name)]
    return states[0] if states else "(no session)"


def _run_started(page: Page, server: LabServer, within: float) -> bool:
    """True once Run All reached the kernel (a cell has an execution count, or the server reports
    the kernel busy), waiting up to ``within`` seconds."""

    def started() -> bool:
        cells = page.evaluate(_CELLS_JS)
        return any(re.fullmatch(r"\[\d+\]:", c["prompt"]) for c in cells) or _server_kernel_state(server) == "busy"

    try:
        _wait_for(started, within, "Run All to reach the kernel", interval=0.5)
    except AssertionError:
        return False
    return True


def _open_and_run_all(steps: Steps, server: LabServer) -> None:
    """Open the served notebook, wait for its kernel, run every cell and wait until all have run."""
    page = steps.page
    nb_name = server.notebook.name

    url = f"{server.url}/lab/tree/{nb_name}?token={server.token}"

    def reload(why: str) -> None:
        # JupyterLab's page can miss the kernel's first messages: its toolbar then shows the kernel
        # "unknown" or "connecting" for good, or it holds the cells' execute requests while the
        # server reports the kernel idle and the page connected. A learner reloads the page. Do
        # that once, say so, and fail if it recurs.
        print(f"[browser] {why}; reloading the page once")
        page.once("dialog", lambda dialog: dialog.accept())  # "leave the page?" if it asks
        page.goto(url, timeout=PAGE_READY_S * 1000)
        _wait_page_kernel_idle(page, server)

    reloaded = False
    with steps.step("open the notebook in JupyterLab"):
        page.goto(url, timeout=PAGE_READY_S * 1000)
        _wait_page_kernel_idle(page, server)
        if not _page_kernel_idle(page):
            reload(f"the page showed the kernel as {_page_kernel_status(page)!r} while the server reported it idle")
            reloaded = True
        _wait_for(
            lambda: _page_kernel_idle(page),
            PAGE_STATUS_S,
            lambda: f"the notebook toolbar to show the kernel idle; it shows {_page_kernel_status(page)!r}",
        )
        steps.shot("01-notebook-opened")

    with steps.step("run all cells (menu Run > Run All Cells): the kernel starts on them"):
        _run_all(page)
        if not _run_started(page, server, FIRST_CELL_S) and not reloaded:
            reload(f"no cell started within {FIRST_CELL_S} s of Run All, the server reporting the kernel "
                   f"{_server_kernel_state(server)!r}")
            _run_all(page)
        _wait_for(
            lambda: _run_started(page, server, 0),
            FIRST_CELL_S,
            lambda: (f"a cell to start after Run All; the toolbar shows the kernel {_page_kernel_status(page)!r}, "
                     f"the server reports it {_server_kernel_state(server)!r}"),
        )

    with steps.step("wait for every cell to execute"):

        def all_done() -> bool:
            cells = [c for c in page.evaluate(_CELLS_JS) if c["hasSource"]]
            executed = [c for c in cells if re.fullmatch(r"\[\d+\]:", c["prompt"])]
            if not executed or any(c["prompt"] == "[*]:" for c in cells):
                return False  # not started yet, or still running
            raised = [c for c in executed if "Traceback (most recent call last)" in c["stderr"]]
            if len(executed) == len(cells) and not raised:
                return True
            # A traceback, or nothing queued yet cells left unexecuted: a cell raised and the kernel
            # dropped the rest of the queue, so the failing cell is the last one that got a count.
            failed = raised[0] if raised else max(executed, key=lambda c: c["index"])
            with contextlib.suppress(Exception):  # show the traceback in the failure screenshot
                outputs = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(failed["index"]).locator(".jp-OutputArea")
                outputs.scroll_into_view_if_needed(timeout=2000)
            raise AssertionError(
                f"Run All stopped at code cell {failed['index'] + 1} {failed['prompt']} "
                f"({len(cells) - len(executed)} cells not run); its error output:\n{failed['stderr'][-1500:]}"
            )

        _wait_for(all_done, RUN_ALL_S, "all code cells to show an execution count", interval=0.5)
        _wait_for(
            lambda: _page_kernel_idle(page),
            WIDGET_UPDATE_S,
            lambda: f"the notebook toolbar to show the kernel idle after Run All; it shows "
                    f"{_page_kernel_status(page)!r}",
        )


def _drive(steps: Steps, server: LabServer) -> None:
    page = steps.page
    _open_and_run_all(steps, server)

    # The clip browser is the cell whose output holds both dropdowns and a player.
    cell = (
        page.locator(".jp-NotebookPanel .jp-CodeCell")
        .filter(has=page.locator(".jp-OutputArea-output select"))
        .filter(has=page.locator(".jp-OutputArea-output audio"))
        .first
    )
    steps.focus = cell
    with steps.step("the clip browser renders (dropdowns, an <audio> player and a plot), no widget errors"):
        seen: dict[str, Any] = {}

        def rendered() -> dict[str, Any] | None:
            _assert_no_widget_errors(page)  # a broken widget fails at once, with the widget's message
            if cell.count() == 0:
                return None
            seen.update(cell.evaluate(_WIDGET_JS) or {})
            return dict(seen) if seen.get("audio") and seen.get("plots") else None

        before: dict[str, Any] = _wait_for(
            rendered,
            WIDGET_UPDATE_S,
            lambda: (
                "a cell output with dropdowns, an <audio> player and a plot"
                + (" (the cell has dropdowns and a player but no plot image/canvas)" if seen else "")
            ),
        )
        # Views render asynchronously; give a late "Error displaying widget" a moment to appear.
        page.wait_for_timeout(1000)
        _assert_no_widget_errors(page)
        cell.scroll_into_view_if_needed()
        steps.shot("02-clip-browser")
        cell.screenshot(path=str(ARTIFACTS / "02-clip-browser-cell.png"))

    audio = cell.locator("audio").first
    with steps.step("the player's audio loads (data:/blob: src, duration > 0)"):
        _check_audio(audio, "initial clip")

    with steps.step("playback starts and currentTime advances"):
        audio.evaluate("a => a.play()")  # rejects (and fails this step) if the browser refuses to play
        start = audio.evaluate("a => a.currentTime")
        _wait_for(
            lambda: audio.evaluate("a => a.currentTime") > start + 0.2,
            AUDIO_S,
            lambda: (
                f"currentTime to advance past {start + 0.2:.2f} s "
                f"([currentTime, paused, ended] = {audio.evaluate('a => [a.currentTime, a.paused, a.ended]')})"
            ),
        )
        steps.shot("03-playing")
        audio.evaluate("a => a.pause()")

    with steps.step("change the class in the clip browser"):
        selects = cell.locator("select")
        labels = [
            selects.nth(i).evaluate(
                "s => (s.labels && s.labels[0] ? s.labels[0].textContent : "
                "(s.previousElementSibling ? s.previousElementSibling.textContent : '')).trim()"
            )
            for i in range(selects.count())
        ]
        matches = [i for i, text in enumerate(labels) if re.search(r"class", text, re.I)]
        assert matches, f"no dropdown labelled like 'class' in the clip browser; dropdown labels: {labels}"
        chooser = selects.nth(matches[0])
        options = chooser.evaluate("s => Array.from(s.options).map(o => o.value)")
        current = chooser.input_value()
        others = [o for o in options if o != current]
        assert others, f"the class dropdown offers only {options!r}"
        chooser.select_option(others[-1])

    with steps.step("the audio source and the plot follow the class change"):
        latest: dict[str, Any] = dict(before)

        def followed() -> bool:
            latest.update(cell.evaluate(_WIDGET_JS) or {})
            return (
                latest["audioSrc"] != before["audioSrc"]
                and latest["audio"] != before["audio"]
                and bool(latest["plots"])
                and latest["plots"] != before["plots"]
            )

        _wait_for(
            followed,
            WIDGET_UPDATE_S,
            lambda: (
                "the player and the plot to change; "
                + "; ".join(
                    f"{what} " + ("changed" if latest[key] != before[key] else f"unchanged: {str(before[key])[:150]}")
                    for what, key in (("<audio> src", "audioSrc"), ("audio bytes", "audio"), ("plot", "plots"))
                )
            ),
        )
        _check_audio(audio, f"clip after choosing class {others[-1]!r}")
        cell.scroll_into_view_if_needed()
        steps.shot("04-after-class-change")
        cell.screenshot(path=str(ARTIFACTS / "04-after-class-change-cell.png"))
        _assert_no_widget_errors(page)


def test_clip_browser_renders_and_plays_in_jupyterlab(lab_server: LabServer, tmp_path: Path) -> None:
    """Notebook 2 runs in JupyterLab, its clip browser renders, plays, and follows a class change."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        if not old.name.startswith(UPLOAD_PREFIX):
            old.unlink()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # new, empty profile every run
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
            timeout=60_000,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            steps = Steps(page, lab_server)
            _drive(steps, lab_server)
        finally:
            context.close()


# ---------------------------------------------------------------------------------------------
# "Classify your own sound": the upload widget of notebook 5

#: Screenshots of the upload test start with this (the clip browser test keeps them).
UPLOAD_PREFIX = "upload-"
#: A file that claims to be a WAV but whose header is cut off after 20 bytes.
CORRUPT_WAV = b"RIFF\x24\x10\x00\x00WAVEfmt \x10\x00\x00\x00"

# The uploader's text: its info line (format, or the problem) and the ranking ("1. siren 34% ...").
_UPLOADER_JS = """
(cell) => {
    const text = (sel) => Array.from(cell.querySelectorAll(sel)).map(e => e.innerText.trim()).join(' | ');
    return {
        html: text('.jp-OutputArea-output .widget-html-content'),
        images: Array.from(cell.querySelectorAll('.jp-OutputArea-output img'))
            .filter(i => i.src && i.offsetParent !== null).length,
        audios: cell.querySelectorAll('audio').length,
        stderr: text('[data-mime-type="application/vnd.jupyter.stderr"]'),
    };
}
"""
_RANK = re.compile(r"(\d)\. (\w+) (\d+)%")


def _upload_notebook(dest_dir: Path, checkpoint: Path) -> Path:
    """A one-cell notebook showing notebook 5's upload widget for ``checkpoint``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("The upload widget of notebook 5, with a checkpoint trained for this test."),
        nbformat.v4.new_code_cell(
            f"from us8k_lib import real_sounds\n\nuploader = real_sounds.SoundUploader({str(checkpoint)!r})\nuploader"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    dest = dest_dir / "upload-widget.ipynb"
    nbformat.write(nb, dest)
    return dest


@pytest.fixture()
def upload_lab(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[LabServer]:
    """A ``jupyter lab`` serving a notebook that shows the upload widget; always stopped."""
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    with _serve(tmp_path, root, _upload_notebook(root, tiny_checkpoint), "jupyter-lab-upload.log") as server:
        yield server


def _choose_file(steps: Steps, cell: Locator, files: Any) -> None:
    """Click the widget's upload button and pick ``files`` in the file chooser it opens."""
    with steps.page.expect_file_chooser(timeout=WIDGET_UPDATE_S * 1000) as chooser:
        cell.get_by_role("button", name=re.compile("Upload a sound")).click()
    chooser.value.set_files(files)


def _wait_for_prediction(steps: Steps, cell: Locator, name: str, description: str) -> list[tuple[str, int]]:
    """Wait until the widget shows ``name``'s format and a top 3; check its players and picture."""
    from us8k_lib.metadata import CLASSES

    seen: dict[str, Any] = {}

    def shown() -> list[tuple[str, int]] | None:
        _assert_no_widget_errors(steps.page)
        seen.update(cell.evaluate(_UPLOADER_JS))
        ranks = _RANK.findall(seen["html"])
        if f"{name}: {description}" not in seen["html"] or len(ranks) != 3 or not seen["images"]:
            return None
        return [(c, int(p)) for _, c, p in ranks]

    top = _wait_for(shown, WIDGET_UPDATE_S, lambda: f"a top-3 prediction for {name}; the widget shows: {seen}")
    assert all(c in CLASSES for c, _ in top) and len({c for c, _ in top}) == 3, top
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and sum(p for _, p in top) <= 101, top
    assert seen["stderr"] == "", f"the upload printed an error: {seen['stderr']}"
    audios = cell.locator("audio")
    assert audios.count() == 2, f"expected a player for the file and one for what the model hears, got {audios.count()}"
    for i, label in enumerate(["the uploaded file", "what the model hears"]):
        _check_audio(audios.nth(i), f"{label} ({name})")
    return top


def _wait_for_prediction_after(steps: Steps, cell: Locator, path: Path) -> list[tuple[str, int]]:
    _choose_file(steps, cell, str(path))
    return _wait_for_prediction(steps, cell, path.name, "PCM 16-bit mono 44.1 kHz, 30.00 s")


def test_upload_widget_classifies_a_real_clip_and_reports_a_corrupt_file(upload_lab: LabServer,
                                                                          tmp_path: Path, real_sample: Path) -> None:
    """Through JupyterLab's upload button: a real clip gets a top-3, a corrupt file a clear message."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{UPLOAD_PREFIX}*.png"):
        old.unlink()
    drilling = real_sample / "audio" / "fold5" / "71171-4-0-0.wav"
    street = real_sample / "audio" / "fold1" / "99180-9-0-2.wav"

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000}, timeout=60_000,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            steps = Steps(page, upload_lab)
            _open_and_run_all(steps, upload_lab)
            cell = page.locator(".jp-NotebookPanel .jp-CodeCell").filter(
                has=page.locator(".jp-OutputArea-output button", has_text="Upload a sound")).first
            steps.focus = cell

            with steps.step("the upload widget renders, no widget errors"):
                _wait_for(lambda: cell.count() > 0, WIDGET_UPDATE_S, "a cell output with an 'Upload a sound' button")
                page.wait_for_timeout(1000)
                _assert_no_widget_errors(page)
                assert "Upload a sound file" in cell.evaluate(_UPLOADER_JS)["html"]
                steps.shot(f"{UPLOAD_PREFIX}01-widget")

            with steps.step("upload a real clip (96 kHz 24-bit stereo drilling): a top-3 prediction appears"):
                _choose_file(steps, cell, str(drilling))
                top = _wait_for_prediction(steps, cell, drilling.name,
                                           "WAVE_FORMAT_EXTENSIBLE PCM 24-bit stereo 96 kHz, 4.00 s")
                print(f"[browser] {drilling.name}: {top}")
                cell.scroll_into_view_if_needed()
                steps.shot(f"{UPLOAD_PREFIX}02-real-clip")
                cell.screenshot(path=str(ARTIFACTS / f"{UPLOAD_PREFIX}02-real-clip-cell.png"))

            with steps.step("upload a 30 s recording (10 s of silence, then a real siren): it is classified "
                            "window by window"):
                import numpy as np
                import soundfile as sf

                siren, sr = sf.read(real_sample / "audio" / "fold1" / "157867-8-0-27.wav", dtype="float32")
                long = tmp_path / "thirty-seconds.wav"
                sf.write(long, np.concatenate([np.zeros(10 * sr, np.float32)] + [siren] * 5), sr, subtype="PCM_16")
                _wait_for_prediction_after(steps, cell, long)
                html = cell.evaluate(_UPLOADER_JS)["html"]
                assert "30.0 s, 14 windows of 4 s (hop 2 s)" in html and "silent left out" in html, html
                assert "(mean over windows)" in html, html
                steps.shot(f"{UPLOAD_PREFIX}03-long-recording")
                cell.screenshot(path=str(ARTIFACTS / f"{UPLOAD_PREFIX}03-long-recording-cell.png"))

            with steps.step("upload a corrupt file: the widget says what is wrong with which file"):
                _choose_file(steps, cell, {"name": "corrupt.wav", "mimeType": "audio/wav", "buffer": CORRUPT_WAV})
                expected = "Cannot classify corrupt.wav: truncated or invalid WAV header"
                state: dict[str, Any] = {}

                def reported() -> bool:
                    state.update(cell.evaluate(_UPLOADER_JS))
                    return expected in state["html"]

                _wait_for(reported, WIDGET_UPDATE_S, lambda: f"the message {expected!r}; the widget shows: {state}")
                assert not _RANK.findall(state["html"]) and state["images"] == 0 and state["audios"] == 0, state
                assert "Traceback" not in state["html"] and state["stderr"] == "", state
                _assert_no_widget_errors(page)
                steps.shot(f"{UPLOAD_PREFIX}04-corrupt-file")

            with steps.step("the widget keeps working: upload another real clip (8 kHz street music)"):
                _choose_file(steps, cell, str(street))
                _wait_for_prediction(steps, cell, street.name, "PCM 16-bit stereo 8 kHz, 4.00 s")
                steps.shot(f"{UPLOAD_PREFIX}05-after-the-error")
        finally:
            context.close()
