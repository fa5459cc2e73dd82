"""The page `narrator serve` answers at `/`, in headless Chromium (a benchmark, run by hand; never a timed test).

For caches of 200 and 20,000 entries (small real MP3s with texts, written straight into the folder), one real
`narrator serve` each and Debian's Chromium driven by Playwright (tests/page_browser.py), it prints:

1. first rows: from navigation start to ``body[data-state=ready]`` with a ``tr.entry`` in the table, as the page
   itself sees it (``performance.now()`` in a MutationObserver installed before the page's script runs), for the
   first load (the server builds its rows) and the median of the later ones; with the wall time around
   ``page.goto`` + the wait, and the size of the rows body;
2. search: from the ``input`` event (the value set, the event dispatched, ``performance.now()`` around it) to the
   table showing the matching rows (a MutationObserver on ``#rows``), and to the next animation frame after it;
   the median of ``--rounds`` different words that each match a few rows, and of the clears that follow them.

Targets at 20,000 entries: first rows under 1 s, search under 200 ms. Every wait is bounded. Run:
    python benchmarks/bench_page.py [--rounds 5] [--sizes 200,20000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_mp3
from page_browser import chromium
from serve_process import port_of, start_serve

from narrator_cli.audio import measure_duration
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

TARGETS = {"first_ms": 1000, "search_ms": 200}
WORDS = ("narrator", "scene", "camera", "light", "shadow", "river", "mountain", "signal", "circle", "vector",
         "motion", "frame", "canvas", "layer", "voice", "sound", "story", "chapter", "moment", "window", "garden",
         "silver", "orange", "planet", "engine", "button", "number")
RARE = ("quokka", "zephyr", "marimba", "tundra", "obelisk", "saffron", "glacier", "juniper", "krypton", "lantern")
PER_RARE = 4  # rows each search word matches
WAIT_MS = 30_000
# Before the page's own script: note when the first rows are shown (CDP injects it; the page's CSP does not apply).
FIRST_ROWS = """(() => {
  const seen = () => document.body && document.body.dataset.state === 'ready' && document.querySelector('#rows tr.entry');
  new MutationObserver((_, obs) => {
    if (window.__firstRows === undefined && seen()) { window.__firstRows = performance.now(); obs.disconnect(); }
  }).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
})();"""
SEARCH = """async ([word, expected]) => {
  const input = document.querySelector('#search'), rows = document.querySelector('#rows');
  const done = () => rows.querySelectorAll('tr.entry').length === expected;
  let settled;
  const shown = new Promise(resolve => {
    settled = resolve;
    new MutationObserver((_, obs) => { if (done()) { obs.disconnect(); resolve(performance.now()); } })
      .observe(rows, {childList: true, subtree: true});
  });
  const t0 = performance.now();
  input.value = word;
  input.dispatchEvent(new Event('input', {bubbles: true}));
  if (done()) settled(performance.now());  // answered within the event itself
  const t1 = await Promise.race([shown, new Promise((_, no) => setTimeout(() => no(new Error('no answer')), 10000))]);
  const t2 = await new Promise(r => requestAnimationFrame(() => r(performance.now())));
  return [t1 - t0, t2 - t0];
}"""


def fill(root: Path, n: int) -> None:
    """``n`` entries of varied text; each RARE word in PER_RARE of them."""
    rng = random.Random(n)
    audio = make_mp3(0.05)
    seconds = measure_duration(audio, "audio/mpeg")
    planted = {i * (n // (len(RARE) * PER_RARE)): RARE[i % len(RARE)] for i in range(len(RARE) * PER_RARE)}
    store = Store(root)
    with store.batch():
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))) + f" {i}"
            if i in planted:
                text += f" {planted[i]}"
            meta = {"text": text, "voiceId": "Rachel", "modelId": "eleven_flash_v2_5", "provider": "elevenlabs",
                    "characterCost": len(text)}
            store.put(cache_key(text, "Rachel", "eleven_flash_v2_5"), audio, "audio/mpeg", seconds, meta)


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    proc, url = start_serve("--audio-path", str(root), "--max-age", "never", "--quiet", drain=True)
    try:
        yield f"http://127.0.0.1:{port_of(url)}"
    finally:
        proc.terminate()
        proc.wait(30)


def first_rows(browser, url: str) -> tuple[float, float, float, float]:
    """(ms from navigation start to the first rows shown, in the page; wall ms around goto + wait;
    ms from navigation start until the rows request was sent, and until its body was in)."""
    context = browser.new_context()
    try:
        context.add_init_script(FIRST_ROWS)
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_function("() => window.__firstRows !== undefined", timeout=WAIT_MS)
        wall = (time.perf_counter() - start) * 1000
        shown, sent, fetched = page.evaluate("""() => {
            const r = performance.getEntriesByType('resource').find(e => e.name.includes('/__narrator-page/rows'));
            return [window.__firstRows, r ? r.startTime : NaN, r ? r.responseEnd : NaN];
        }""")
        return shown, wall, sent, fetched
    finally:
        context.close()


def searches(browser, url: str, n: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """(search ms to rows, search ms to next frame, clear ms to rows) for ``rounds`` rare words."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
        shown_all = min(n, 200)
        found, framed, cleared = [], [], []
        for word in RARE[:rounds]:
            to_rows, to_frame = page.evaluate(SEARCH, [word, PER_RARE])
            found.append(to_rows)
            framed.append(to_frame)
            cleared.append(page.evaluate(SEARCH, ["", shown_all])[0])
        return found, framed, cleared
    finally:
        context.close()


def median(rows: list[tuple[float, ...]], i: int) -> float:
    return statistics.median(r[i] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="page loads and searches per size (at most 10)")
    parser.add_argument("--sizes", default="200,20000", help="cache sizes, comma-separated")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, len(RARE)))
    sizes = [int(s) for s in args.sizes.split(",")]
    with chromium() as browser, tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        for n in sizes:
            root = Path(tmp) / f"cache-{n}"
            start = time.perf_counter()
            fill(root, n)
            made = time.perf_counter() - start
            with serving(root) as url:
                loads = [first_rows(browser, url) for _ in range(rounds + 1)]
                body = httpx.get(url + "/__narrator-page/rows").content
                assert len(json.loads(body)["rows"]) == n
                found, framed, cleared = searches(browser, url, n, rounds)
            cold, warm = loads[0], loads[1:]
            warm_page = median(warm, 0)
            search = statistics.median(found)
            target = f" (targets at 20,000: first rows < {TARGETS['first_ms']} ms, search < {TARGETS['search_ms']} ms)"
            print(f"{n:>6} entries (cache made in {made:.1f} s, rows body {len(body) / 1e6:.2f} MB){target if n == 20000 else ''}")
            print(f"  first rows    first load {cold[0]:6.0f} ms (wall {cold[1]:6.0f})   median of {len(warm)} later "
                  f"{warm_page:6.0f} ms (wall {median(warm, 1):6.0f})"
                  + (f"   {'OK' if max(cold[0], warm_page) < TARGETS['first_ms'] else 'OVER'}" if n == 20000 else ""))
            print(f"    of which    rows requested at {cold[2]:4.0f} / {median(warm, 2):4.0f} ms, body in at "
                  f"{cold[3]:4.0f} / {median(warm, 3):4.0f} ms (first load / median later)")
            print(f"  search        median of {len(found)} {search:6.1f} ms to rows, "
                  f"{statistics.median(framed):6.1f} ms to next frame (max {max(found):.1f})   "
                  f"clear {statistics.median(cleared):6.1f} ms"
                  + (f"   {'OK' if search < TARGETS['search_ms'] else 'OVER'}" if n == 20000 else ""), flush=True)


if __name__ == "__main__":
    main()
