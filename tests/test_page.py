"""The page `narrator serve` answers at `/`, driven in real headless Chromium (Debian's, through Playwright)
against a real `narrator serve` process over a cache of real audio: listing, search, sorting, playing,
captions, hostile text, the token of a non-loopback server, CSP, and a screenshot kept as an artifact.

One browser per module (2 cores), a new context and page per test. A missing Chromium fails, never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from audio_fixtures import make_mp3
from page_browser import chromium, missing
from serve_process import CLI, port_of, start_serve

from narrator_cli import __version__
from narrator_cli.audio import measure_duration
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

# read before the tests' isolation drops every NARRATOR_* setting of the host
ARTIFACTS = Path(os.environ.get("NARRATOR_ARTIFACTS") or Path(__file__).parent / "artifacts")
HOSTILE = "<img src=x onerror=alert(1)>"
TOKEN = "page-test-Secret-7f3a9c"
WAIT_MS = 10_000
ROWS = "#rows tr.entry"
PAGE_ROWS = "/__narrator-page/rows"


@pytest.fixture(scope="module")
def browser():
    reason = missing()
    if reason:  # a failure, never a skip: CI installs the browser
        pytest.fail(reason, pytrace=False)
    with chromium() as b:
        yield b


class Watched:
    """A page with what it did on the side: dialogs it opened, console errors, every URL it requested."""

    def __init__(self, context) -> None:
        self.context = context
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.on("request", lambda r: self.urls.append(r.url))


@pytest.fixture
def tab(browser) -> Iterator[Watched]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield Watched(context)
    finally:
        context.close()


@contextlib.contextmanager
def serving(cache: Path, *args: str, drain: bool = True) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real `narrator serve` over ``cache``; stopped (SIGTERM) after the block."""
    proc, url = start_serve("--audio-path", str(cache), "--max-age", "never", *args, drain=drain)
    try:
        yield proc, f"http://127.0.0.1:{port_of(url)}"  # bound to 0.0.0.0 or not, the browser comes by loopback
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def put(store: Store, text: str | None, seconds: float, voice: str = "Rachel", model: str = "eleven_flash_v2_5",
        provider: str = "elevenlabs", key: str | None = None, **extra: object) -> dict:
    """An MP3 entry of ``seconds`` (its duration as mutagen measures it, as the server would); its metadata.
    ``text=None``: an entry whose text is unknown, as the editor's uploads are."""
    audio = make_mp3(seconds)
    meta = {} if text is None else {"text": text, "voiceId": voice, "modelId": model, "provider": provider, **extra}
    key = key or cache_key(text or "", voice, model)
    return store.put(key, audio, "audio/mpeg", measure_duration(audio, "audio/mpeg"), meta).meta


@pytest.fixture
def cache(tmp_path) -> tuple[Path, list[dict]]:
    """Four entries: durations and texts that sort differently, one without text, costs and hits for the totals."""
    store = Store(tmp_path / "audio-cache")
    metas = [
        put(store, "The quick brown fox jumps", 2.5, characterCost=25),
        put(store, "Hello world", 1.0, voice="mock", model="120", provider="mock"),
        put(store, None, 4.0, key="0badc0de"),
        put(store, "Zebra crossing at dawn", 0.3, voice="en", model="espeak-ng", provider="espeak",
            characterCost=22),
    ]
    store.record_hits({metas[0]["cacheKey"]: 3})  # 3 * 25 characters saved
    return store.root, metas


def open_page(tab: Watched, url: str, state: str = "ready"):
    page = tab.page
    page.goto(url + "/")
    page.wait_for_selector(f"body[data-state={state}]")
    return page


def shown_keys(page) -> list[str]:
    return page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.key)")


def wait_rows(page, n: int, at_least: bool = False) -> None:
    """Until ``n`` rows are shown (``at_least``: ``n`` or more, for a step the scroll observer may follow at once
    with the next batch)."""
    test = ">=" if at_least else "==="
    page.wait_for_function(f"([sel, n]) => document.querySelectorAll(sel).length {test} n", arg=[ROWS, n])


def cell(page, key: str, name: str) -> str:
    return page.text_content(f'{ROWS}[data-key="{key}"] td.{name}').strip()


def count_text(page) -> str:
    return " ".join(page.text_content("#count").split())


# --- 1. listing --------------------------------------------------------------------------------------------
def test_page_lists_every_entry_with_its_text_or_key_and_the_totals(tab, cache):
    root, metas = cache
    with serving(root) as (_, url):
        page = open_page(tab, url)
        wait_rows(page, 4)
        assert sorted(shown_keys(page)) == sorted(m["cacheKey"] for m in metas)
        for m in metas:
            key = m["cacheKey"]
            if "text" in m:
                assert cell(page, key, "text") == m["text"]
                assert cell(page, key, "voice") == m["voiceId"]
                assert cell(page, key, "model") == m["modelId"]
                assert cell(page, key, "provider") == m["provider"]
            else:  # the text is unknown: the key, as code
                assert page.text_content(f'{ROWS}[data-key="{key}"] td.text code') == key
            assert cell(page, key, "duration") == f"{m['duration']:.2f} s"
            for name in ("size", "created", "used"):
                assert cell(page, key, name), f"{name} of {key} is empty"
            assert page.get_attribute(f'{ROWS}[data-key="{key}"] button.play', "aria-label") == "Play"
        assert "25" in cell(page, metas[0]["cacheKey"], "billed")
        assert "4 of 4" in count_text(page)
        assert __version__ in page.text_content("#version")
        assert re.search(r"\b4\b", page.text_content("#total-entries"))
        assert "47" in page.text_content("#total-billed")  # 25 + 22
        assert "75" in page.text_content("#total-saved")  # 3 hits of 25
        for name in ("bytes", "duration"):
            assert re.search(r"\d", page.text_content(f"#total-{name}")), f"#total-{name} shows no figure"
        assert not tab.errors and not tab.dialogs


def test_page_loads_only_its_own_files(tab, cache):
    """No CDN, no web fonts from elsewhere: every request the page makes is to the server itself."""
    root, _ = cache
    with serving(root) as (_, url):
        page = open_page(tab, url)
        page.click(f"{ROWS} button.play")
        page.wait_for_function("() => document.querySelector('audio#player').readyState >= 1")
        assert tab.urls and all(u.startswith(url + "/") for u in tab.urls), tab.urls
        assert any(PAGE_ROWS in u for u in tab.urls)


# --- 2. search ---------------------------------------------------------------------------------------------
def test_search_narrows_rows_as_you_type_and_clearing_restores(tab, cache):
    root, metas = cache
    fox, hello, unknown, zebra = (m["cacheKey"] for m in metas)
    with serving(root) as (_, url):
        page = open_page(tab, url)
        wait_rows(page, 4)
        page.type("#search", "FOX")  # case-insensitive, key by key
        wait_rows(page, 1)
        assert shown_keys(page) == [fox]
        assert "1 of 4" in count_text(page)
        page.fill("#search", "o")  # fox, hello world, zebra crossing (not the key-only entry: no "o" in 0badc0de)
        wait_rows(page, 3)
        assert sorted(shown_keys(page)) == sorted([fox, hello, zebra])
        page.fill("#search", "0BADC")  # an entry without text is found by its key
        wait_rows(page, 1)
        assert shown_keys(page) == [unknown]
        page.fill("#search", "no such words anywhere")
        wait_rows(page, 0)
        assert "0 of 4" in count_text(page)
        page.fill("#search", "")
        wait_rows(page, 4)
        assert "4 of 4" in count_text(page)


# --- 3. sorting --------------------------------------------------------------------------------------------
def sorted_by(page, column: str) -> tuple[str, list[str]]:
    page.click(f'th button[data-sort="{column}"]')
    direction = page.get_attribute(f'th:has(button[data-sort="{column}"])', "aria-sort")
    return direction, shown_keys(page)


def test_sorting_by_duration_orders_rows_and_a_second_click_reverses(tab, cache):
    root, metas = cache
    by_duration = [m["cacheKey"] for m in sorted(metas, key=lambda m: m["duration"])]
    with serving(root) as (_, url):
        page = open_page(tab, url)
        wait_rows(page, 4)
        first, order = sorted_by(page, "duration")
        assert first in ("ascending", "descending")
        assert order == (by_duration if first == "ascending" else by_duration[::-1])
        second, order = sorted_by(page, "duration")
        assert {first, second} == {"ascending", "descending"}
        assert order == (by_duration if second == "ascending" else by_duration[::-1])
        assert page.eval_on_selector_all("th[aria-sort]", "ths => ths.filter(t => t.getAttribute('aria-sort') "
                                         "!== 'none').length") == 1  # only the sorted column says so
        _, order = sorted_by(page, "text")
        texts = [page.text_content(f'{ROWS}[data-key="{k}"] td.text').strip().lower() for k in order]
        assert texts in (sorted(texts), sorted(texts, reverse=True))


# --- 4. playing --------------------------------------------------------------------------------------------
def test_a_line_plays_and_the_browser_measures_the_duration_of_the_metadata(tab, cache):
    root, metas = cache
    fox = metas[0]
    with serving(root) as (_, url):
        page = open_page(tab, url)
        page.click(f'{ROWS}[data-key="{fox["cacheKey"]}"] button.play')
        page.wait_for_function("() => { const a = document.querySelector('audio#player');"
                               " return a.readyState >= 1 && isFinite(a.duration); }")
        src = page.eval_on_selector("audio#player", "a => new URL(a.src).pathname")
        assert src == f"/__narrator-audio/{fox['fileName']}"
        assert abs(page.eval_on_selector("audio#player", "a => a.duration") - fox["duration"]) < 0.05
        page.wait_for_function("() => document.querySelector('audio#player').currentTime > 0")  # it plays
        assert page.eval_on_selector_all(f"{ROWS}.playing", "rows => rows.map(r => r.dataset.key)") == [
            fox["cacheKey"]]
        assert len(set(page.eval_on_selector_all("audio", "as => as.map(a => a.id)"))) == 1  # one player


# --- 5. captions -------------------------------------------------------------------------------------------
def test_captions_advance_word_by_word_while_a_line_plays(tab):
    text = "one two three four five six seven eight"
    done = subprocess.run([*CLI, "speak", "--provider", "mock", "--model", "100", "--json", text],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = json.loads(done.stdout)["cacheKey"]
    meta = json.loads(Path(f"audio-cache/{key}.meta.json").read_text())
    words = [w["text"] for w in meta["words"]]
    assert len(words) == 8
    with serving(Path("audio-cache")) as (_, url):
        page = open_page(tab, url)
        page.click(f'{ROWS}[data-key="{key}"] button.play')
        page.wait_for_function("n => document.querySelectorAll('#captions span.word').length === n", arg=len(words))
        assert page.eval_on_selector_all("#captions span.word", "ws => ws.map(w => w.textContent.trim())") == words
        assert page.get_attribute("#captions", "data-estimated") is None  # real timings
        now = "() => [...document.querySelectorAll('#captions span.word')].findIndex(w => w.classList.contains('now'))"
        seen = [page.wait_for_function(f"() => ({now})() >= 0").json_value()]
        for _ in range(3):  # the spoken word moves on, several times, while it plays
            seen.append(page.wait_for_function(f"i => ({now})() > i && ({now})()", arg=seen[-1]).json_value())
        assert seen == sorted(seen) and len(set(seen)) == 4
        assert page.eval_on_selector_all("#captions span.word.now", "ws => ws.length") == 1


# --- 6 and 9. hostile text, CSP ----------------------------------------------------------------------------
def one_word(text: str) -> list[dict]:
    return [{"text": text, "start": 0.0, "end": 0.9, "offset": 0}]


def test_hostile_text_is_shown_as_text_and_runs_nothing(tab, tmp_path):
    store = Store(tmp_path / "audio-cache")
    script, bold = "<script>alert(2)</script>", "<b onmouseover=alert(4)>x</b>"
    hostile = put(store, HOSTILE, 1.0, voice='"><img src=x onerror=alert(3)>', words=one_word(HOSTILE))
    other = put(store, script, 1.0, provider=bold, words=one_word(script))
    with serving(store.root) as (_, url):
        page = open_page(tab, url)
        wait_rows(page, 2)
        assert cell(page, hostile["cacheKey"], "text") == HOSTILE
        assert cell(page, hostile["cacheKey"], "voice") == '"><img src=x onerror=alert(3)>'
        assert cell(page, other["cacheKey"], "text") == script
        assert cell(page, other["cacheKey"], "provider") == bold
        for meta in (hostile, other):  # the captions come from the words, which anyone can write too
            page.click(f'{ROWS}[data-key="{meta["cacheKey"]}"] button.play')
            page.wait_for_function("t => [...document.querySelectorAll('#captions span.word')]"
                                   ".map(w => w.textContent).join(' ') === t", arg=meta["text"])
        page.fill("#search", "<img")
        wait_rows(page, 1)
        page.hover(f"{ROWS} td.text")
        assert page.evaluate("() => document.querySelectorAll('img, b, body script:not([src])').length") == 0
        assert not tab.dialogs
        assert not [e for e in tab.errors if "Content Security Policy" in e]  # nothing even tried to run


def parse_csp(header: str) -> dict[str, list[str]]:
    directives = (d.split() for d in header.split(";") if d.strip())
    return {d[0].lower(): d[1:] for d in directives}


def test_the_page_has_a_content_security_policy_that_allows_only_its_own_files(tmp_path):
    store = Store(tmp_path / "audio-cache")
    put(store, "Hello", 1.0)
    with serving(store.root) as (_, url):
        page = httpx.get(url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = parse_csp(page.headers["content-security-policy"])
        assert csp.get("default-src") in (["'none'"], ["'self'"]), csp
        for kind in ("script-src", "style-src", "media-src", "connect-src"):
            sources = csp.get(kind, csp["default-src"])
            assert set(sources) <= {"'self'", "'none'"}, (kind, sources)  # no inline, no eval, no other host
        assert csp.get("object-src", csp["default-src"]) == ["'none'"] or csp["default-src"] == ["'none'"]
        html = page.text
        assert re.search(r'<script[^>]+src="/__narrator-page/page\.js"', html)
        assert re.search(r'<link[^>]+href="/__narrator-page/page\.css"', html)
        for name, kind in (("page.js", "javascript"), ("page.css", "text/css")):
            asset = httpx.get(f"{url}/__narrator-page/{name}")
            assert asset.status_code == 200 and kind in asset.headers["content-type"]
            assert "content-security-policy" in asset.headers
        assert httpx.get(f"{url}/__narrator-page/nothing.js").status_code == 404


def test_the_browser_enforces_the_policy_on_injected_markup(tab, cache):
    """Should the page ever put text in as markup, the policy still stops it: an inline script, an inline
    handler and a script from elsewhere, injected into the live page, never run."""
    root, _ = cache
    with serving(root) as (_, url):
        page = open_page(tab, url)
        ran = page.evaluate("""async () => {
            const violations = [];
            document.addEventListener('securitypolicyviolation', e => violations.push(e.violatedDirective));
            const inline = document.createElement('script');
            inline.textContent = 'window.__inline = 1';
            document.body.append(inline);
            const box = document.createElement('div');
            box.innerHTML = '<img src=x onerror="window.__handler = 1">';
            document.body.append(box);
            const remote = document.createElement('script');
            remote.src = 'data:text/javascript,window.__remote=1';
            document.body.append(remote);
            await new Promise(r => setTimeout(r, 300));
            return {inline: window.__inline, handler: window.__handler, remote: window.__remote,
                    violations: violations.length};
        }""")
        assert ran["inline"] is None and ran["handler"] is None and ran["remote"] is None, ran
        assert ran["violations"] >= 2, ran  # the browser refused them because of the policy
        assert not tab.dialogs


# --- 7. token ----------------------------------------------------------------------------------------------
def test_a_server_beyond_loopback_shows_nothing_until_the_token_is_given_once_per_session(browser, tab, cache):
    root, metas = cache
    with serving(root, "--host", "0.0.0.0", "--token", TOKEN, drain=False) as (proc, url):
        page = open_page(tab, url, "locked")
        assert page.is_visible("#token-form")
        assert page.eval_on_selector_all(ROWS, "rows => rows.length") == 0
        body = page.text_content("body")
        assert not any(m.get("text", "§") in body or m["cacheKey"] in body for m in metas)

        with page.expect_response(lambda r: PAGE_ROWS in r.url) as wrong:
            page.fill("#token", "not-the-token")
            page.click("#token-submit")
        assert wrong.value.status == 401
        page.wait_for_selector("body[data-state=locked]")
        assert page.eval_on_selector_all(ROWS, "rows => rows.length") == 0

        with page.expect_request(lambda r: PAGE_ROWS in r.url and r.headers.get("x-narrator-token") == TOKEN):
            page.fill("#token", TOKEN)
            page.click("#token-submit")
        page.wait_for_selector("body[data-state=ready]")
        wait_rows(page, 4)
        assert not page.is_visible("#token-form")
        assert TOKEN in page.evaluate("() => Object.values(sessionStorage)")

        page.reload()  # the same session: no question again
        page.wait_for_selector("body[data-state=ready]")
        wait_rows(page, 4)
        assert not page.is_visible("#token-form")
        fox = metas[0]
        page.click(f'{ROWS}[data-key="{fox["cacheKey"]}"] button.play')  # its audio and captions, with the token
        page.wait_for_function("() => document.querySelector('audio#player').readyState >= 1")
        page.wait_for_function("n => document.querySelectorAll('#captions span.word').length === n",
                               arg=len(fox["text"].split()))
        assert page.is_hidden("#error")

        other = browser.new_context()  # another session asks again
        try:
            fresh = other.new_page()
            fresh.goto(url + "/")
            fresh.wait_for_selector("body[data-state=locked]", timeout=WAIT_MS)
            assert fresh.eval_on_selector_all(ROWS, "rows => rows.length") == 0
        finally:
            other.close()

        assert not [u for u in tab.urls if TOKEN in u], "the token went into a URL"
        assert not [u for u in tab.urls if "not-the-token" in u]
        proc.terminate()
        assert proc.wait(15) == 0
        log = proc.stderr.read()
    assert '"stopped"' in log  # the whole log was read, and
    assert TOKEN not in log and "not-the-token" not in log  # no token in it, right or wrong


def test_the_rows_endpoint_follows_the_token_rules_of_the_index(tmp_path):
    store = Store(tmp_path / "audio-cache")
    metas = [put(store, f"line {i}", 0.5) for i in range(3)]
    with serving(store.root, "--token", TOKEN) as (_, url):
        assert httpx.get(url + PAGE_ROWS).status_code == 401
        assert httpx.get(url + PAGE_ROWS, headers={"X-Narrator-Token": "wrong"}).status_code == 401
        by_query = httpx.get(url + PAGE_ROWS, params={"token": TOKEN})
        reply = httpx.get(url + PAGE_ROWS, headers={"X-Narrator-Token": TOKEN})
        assert by_query.status_code == reply.status_code == 200
        data = reply.json()
        assert set(data) >= {"fields", "rows", "version", "totals"} and data["version"] == __version__
        assert len(data["rows"]) == 3 and all(len(r) == len(data["fields"]) for r in data["rows"])
        keys = {r[data["fields"].index("cacheKey")] for r in data["rows"]} if "cacheKey" in data["fields"] else None
        assert keys in (None, {m["cacheKey"] for m in metas})


# --- many entries ------------------------------------------------------------------------------------------
def test_a_large_cache_renders_200_rows_then_more_on_demand_and_search_covers_all(tab, tmp_path):
    store = Store(tmp_path / "audio-cache")
    audio = make_mp3(0.2)
    seconds = measure_duration(audio, "audio/mpeg")
    with store.batch():
        for i in range(450):
            text = f"line number {i:04d}" + (" needle" if i in (7, 449) else "")
            store.put(cache_key(text, "v", "m"), audio, "audio/mpeg", seconds, {"text": text, "voiceId": "v",
                                                                                  "modelId": "m"})
    with serving(store.root) as (_, url):
        page = open_page(tab, url)
        wait_rows(page, 200)
        assert "450 of 450" in count_text(page)
        page.click("#more")  # the button scrolls into view with it: the observer may add the rest right after
        wait_rows(page, 400, at_least=True)
        page.eval_on_selector(f"{ROWS}:last-child", "r => r.scrollIntoView()")  # near the end: the rest
        wait_rows(page, 450)
        page.fill("#search", "NEEDLE")  # rows never rendered are searched too
        wait_rows(page, 2)
        assert sorted(cell(page, k, "text") for k in shown_keys(page)) == ["line number 0007 needle",
                                                                             "line number 0449 needle"]
        assert "2 of 450" in count_text(page)


# --- 8. screenshot -----------------------------------------------------------------------------------------
def test_a_screenshot_of_the_page_is_kept_as_an_artifact(tab, cache):
    """The page as a reviewer sees it (tests/artifacts/page.png, or in NARRATOR_ARTIFACTS): a line playing."""
    root, metas = cache
    with serving(root) as (_, url):
        page = open_page(tab, url)
        page.set_viewport_size({"width": 1280, "height": 720})
        wait_rows(page, 4)
        page.click(f'{ROWS}[data-key="{metas[0]["cacheKey"]}"] button.play')
        page.wait_for_selector("#captions span.word.now")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "page.png"
        page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and height >= 720
