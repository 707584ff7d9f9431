"""The proxy's playground page in a real browser (Debian's Chromium driven by
playwright-python), against real servers: eSpeak NG TTS and pocketsphinx WhisperX
behind the auth proxy, all gunicorn on loopback.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no
``playwright install``: the system Chromium is used). Missing either is a
failure, not a skip. ``PLAYGROUND_SCREENSHOT_DIR=<dir>`` keeps the screenshots.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from .helpers import Gunicorn, free_port

pytestmark = pytest.mark.browser

KEY = "playground-secret-api-key-7f3a91c2"
ACCESS_KEY = "door-key-5b1e"
TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 90_000


# ---- processes ------------------------------------------------------------------------------


def _proxy(tmp: Path, name: str, tts_url: str, wx_url: str, **extra) -> Gunicorn:
    config = tmp / "server_config.json"  # empty: no local server_config.json is read
    config.write_text("{}")
    env = {
        "TTS_SERVER_URL": tts_url,
        "TTS_WHISPER_URL": wx_url,
        "TTS_API_KEY": KEY,
        "GPU_AUDIO_CONFIG": str(config),
        "PROXY_ACCESS_KEY": "",
        "PROXY_START_GPU": "0",
        **extra,
    }
    return Gunicorn("proxy.app:create_app()", env, tmp / f"{name}.log")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Real TTS + WhisperX servers (with an API key) and a proxy in front of them."""
    tmp = tmp_path_factory.mktemp("playground")
    common = {"TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "activity")}
    started = []
    try:
        tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
        started.append(tts)
        wx = Gunicorn(
            "whisperx_server.app:create_app()", {**common, "WHISPERX_ENGINE": "pocketsphinx"}, tmp / "wx.log"
        )
        started.append(wx)
        proxy = _proxy(tmp, "proxy", tts.url, wx.url)
        started.append(proxy)
        locked = _proxy(tmp, "locked", tts.url, wx.url, PROXY_ACCESS_KEY=ACCESS_KEY)
        started.append(locked)
        for server in started:
            server.wait_ready()
        yield {"tts": tts, "wx": wx, "proxy": proxy, "locked": locked, "tmp": tmp}
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A proxy whose TTS upstream is still loading (503 + Retry-After) and whose
    WhisperX upstream is not there at all."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    @Request.application
    def loading(request):
        if request.path.endswith("/health"):
            body, retry = {"status": "loading", "model_loaded": False, "engine": "qwen3-tts"}, "10"
        else:
            body, retry = {"success": False, "error": "The model is still loading."}, "30"
        return Response(
            json.dumps(body), status=503, content_type="application/json", headers={"Retry-After": retry}
        )

    stub = make_server("127.0.0.1", 0, loading, threaded=True)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("broken")
    proxy = _proxy(tmp, "proxy", f"http://127.0.0.1:{stub.server_port}", f"http://127.0.0.1:{free_port()}")
    try:
        yield proxy.wait_ready()
    finally:
        proxy.stop()
        stub.shutdown()


# ---- browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: install it with `apt-get install chromium` "
            "(Debian/Ubuntu), or set CHROMIUM_PATH. This browser test does not skip.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright-python is not installed: `pip install playwright` (the system Chromium is "
            "used, so no `playwright install` is needed). This browser test does not skip.",
            pytrace=False,
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    """A fresh context (no cookies, no cache) and every response it receives."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.responses, page.console = [], []
    page.on("response", lambda r: page.responses.append(r))
    page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        context.close()


def screenshot(page, tmp_path, name):
    folder = Path(os.environ.get("PLAYGROUND_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def wait_healthy(page):
    page.wait_for_function("""() => [...document.querySelectorAll('#health [data-server]')]
                                     .every(card => card.dataset.state === 'ok')""")


def speak_and_wait(page, text, instruct=""):
    page.fill("#text", text)
    page.fill("#instruct", instruct)
    page.click("#speak")
    page.wait_for_function(
        """n => { const a = document.querySelector('#audio');
                  const err = document.querySelector('#error');
                  if (err && !err.hidden) return true;   // fail fast with the page's message
                  return a.duration > 0 && document.querySelectorAll('#words .word').length === n; }""",
        arg=len(text.split()),
    )
    assert page.is_hidden("#error"), page.inner_text("#error")


def word_times(page):
    return page.eval_on_selector_all(
        "#words .word",
        "els => els.map(e => [e.querySelector('.w').textContent, "
        "Number(e.dataset.start), Number(e.dataset.end)])",
    )


# ---- tests ----------------------------------------------------------------------------------


def test_speak_play_align_and_no_key_reaches_the_page(page, stack, tmp_path):
    page.goto(stack["proxy"].url + "/")
    wait_healthy(page)
    health = page.inner_text("#health")
    assert "espeak-ng" in health and "pocketsphinx" in health, health

    speak_and_wait(page, TEXT, instruct="speak slowly")
    duration = page.evaluate("document.querySelector('#audio').duration")
    words = word_times(page)
    assert [w for w, _, _ in words] == TEXT.split()
    previous = 0.0
    for word, start, end in words:
        assert previous <= start <= end <= duration + 1e-3, (word, start, end, duration)
        previous = start
    assert f"aligned {len(TEXT.split())} words" in page.inner_text("#status")
    # eSpeak ignores instruct: the server's warning is shown, not hidden.
    assert "instruct" in page.inner_text("#warnings")

    # The current word follows the audio: seek into the fourth word and it lights up alone.
    _, start, end = words[3]
    page.evaluate("t => { document.querySelector('#audio').currentTime = t; }", (start + end) / 2)
    page.wait_for_function(
        "() => document.querySelectorAll('#words .word.current').length === 1 && "
        "document.querySelector('#words .word.current .w').textContent === 'fox'"
    )
    # And while it plays (headless Chromium plays into a null sink, the clock still runs).
    page.evaluate("() => { const a = document.querySelector('#audio'); a.currentTime = 0; a.play(); }")
    page.wait_for_function("() => document.querySelector('#audio').currentTime > 0.3")
    page.evaluate("() => document.querySelector('#audio').pause()")
    assert page.eval_on_selector_all("#words .word.current", "els => els.length") <= 1
    screenshot(page, tmp_path, "playground")

    # The API key is in no response the page received, nor in the page.
    seen = {}
    for response in page.responses:
        try:
            body = response.body()
        except Exception:  # a redirect or a response without a body
            body = b""
        seen[response.url.replace(stack["proxy"].url, "")] = response.status
        assert KEY.encode() not in body, f"the API key leaked in {response.url}"
        assert KEY not in json.dumps(response.all_headers()), (
            f"the API key leaked in headers of {response.url}"
        )
    assert KEY not in page.content()
    for path in (
        "/",
        "/static/playground.js",
        "/static/playground.css",
        "/tts/health",
        "/whisperx/health",
        "/tts/generate_batch",
        "/whisperx/align",
    ):
        assert seen.get(path) == 200, (path, seen)
    missing = [f"{r.status} {r.url}" for r in page.responses if r.status >= 400]
    assert not missing, missing
    assert not [line for line in page.console if line.startswith(("error", "pageerror"))], page.console


def test_access_key_form_sets_a_cookie_and_retries(page, stack, tmp_path):
    page.goto(stack["locked"].url + "/")
    # The form shows as soon as the proxy's 401 to tts/health comes back: no reload,
    # no shorter wait. A page without it is not the locked proxy's: a server that took
    # its port before gunicorn bound it (helpers.Gunicorn now hands gunicorn its socket).
    try:
        page.wait_for_selector("#access", state="visible")
    except Exception:
        seen = [f"{r.status} {r.url}" for r in page.responses] + page.console
        pytest.fail(f"no access form; the page saw {seen}; proxy log:\n{stack['locked'].log()[-3000:]}")
    page.fill("#access-key", "not-the-key")
    page.click("#access-submit")
    page.wait_for_selector("#access-error", state="visible")
    assert "not valid" in page.inner_text("#access-error")
    screenshot(page, tmp_path, "access")

    page.fill("#access-key", ACCESS_KEY)
    page.click("#access-submit")
    page.wait_for_selector("#access", state="hidden")
    wait_healthy(page)
    speak_and_wait(page, "Hello there, this is a test.")
    cookies = page.context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "gpu_audio_proxy"] == [True]
    assert ACCESS_KEY not in page.evaluate("document.cookie")


def test_errors_are_shown_with_the_servers_message(page, broken, tmp_path):
    page.goto(broken.url + "/")
    page.wait_for_function("""() => {
        const s = n => document.querySelector(`#health [data-server="${n}"]`).dataset.state;
        return s('tts') === 'loading' && s('whisperx') === 'down'; }""")
    health = page.inner_text("#health")
    assert "Retry after 10 s" in health and "cannot be reached" in health, health

    page.fill("#text", "Hello.")
    page.click("#speak")
    page.wait_for_selector("#error", state="visible")
    error = page.inner_text("#error")
    assert "starting or busy (503)" in error and "The model is still loading." in error, error
    assert "Retry after 30 s" in error, error
    assert page.is_enabled("#speak")
    screenshot(page, tmp_path, "errors")
