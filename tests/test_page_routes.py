"""The page's HTTP side on a real server (the browser side is tests/test_page.py): its files with their
Content-Security-Policy, the rows and the entry behind the token rules, and values of the wrong type never
reaching the page as anything but null."""

from __future__ import annotations

import json

from audio_fixtures import make_mp3
from test_server import get, running

from narrator_cli import page


def test_the_page_and_its_files_carry_the_policy(tmp_path):
    with running(tmp_path) as srv:
        for path, kind in (("/", "text/html"), ("/__narrator-page/page.js", "text/javascript"),
                           ("/__narrator-page/page.css", "text/css"), ("/__narrator-page/icon.svg", "image/svg")):
            status, headers, body = get(srv.port, path)
            assert status == 200 and headers["content-type"].startswith(kind) and body, path
            policy = headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
            assert headers["x-content-type-options"] == "nosniff"
        html = get(srv.port, "/")[2].decode()
        assert "<script>" not in html and "style=" not in html  # nothing inline: the policy would block it
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere
        assert get(srv.port, "/__narrator-page/nothing.js")[0] == 404


def test_rows_hold_each_entry_and_null_for_what_is_not_of_its_type(tmp_path):
    with running(tmp_path) as srv:
        srv.store.put("0000abcd", make_mp3(2.5), "audio/mpeg", 2.5,
                      {"text": "Hello", "voiceId": "v", "modelId": "m", "provider": "elevenlabs",
                       "characterCost": 5, "words": [{"text": "Hello", "start": 0, "end": 1, "offset": 0}]})
        srv.store.put("0000abce", make_mp3(1), "audio/mpeg", 1.0,
                      {"text": ["not", "text"], "voiceId": {"x": 1}, "characterCost": -3, "words": "many"})
        status, headers, body = get(srv.port, page.ROWS_PATH)
        assert status == 200 and headers["content-type"] == "application/json"
        doc = json.loads(body)
        rows = {r[0]: dict(zip(doc["fields"], r)) for r in doc["rows"]}
        good, odd = rows["0000abcd"], rows["0000abce"]
        assert (good["text"], good["voiceId"], good["characterCost"], good["words"], good["fileName"]) == \
            ("Hello", "v", 5, 1, "0000abcd.mp3")
        assert (odd["text"], odd["voiceId"], odd["characterCost"], odd["words"]) == (None, None, None, 0)
        assert doc["totals"]["entries"] == 2 and doc["totals"]["duration"] == 3.5
        assert doc["totals"]["charactersBilled"] == 5
        entry = json.loads(get(srv.port, f"{page.ENTRY_PATH}?key=0000abcd")[2])
        assert entry["words"] == [{"text": "Hello", "start": 0, "end": 1, "offset": 0}]
        assert get(srv.port, f"{page.ENTRY_PATH}?key=../etc")[0] == 404
        assert get(srv.port, f"{page.ENTRY_PATH}?key=0000ffff")[0] == 404


def test_rows_and_entries_follow_the_token_rules_and_the_page_itself_does_not(tmp_path):
    with running(tmp_path, token="s3cret") as srv:
        srv.store.put("0000abcd", make_mp3(1), "audio/mpeg", 1.0, {"text": "Private line"})
        assert get(srv.port, "/")[0] == 200  # the page holds no data: it asks for the token
        for path in (page.ROWS_PATH, f"{page.ENTRY_PATH}?key=0000abcd"):
            status, _, body = get(srv.port, path)
            assert status == 401 and b"Private" not in body
            assert get(srv.port, path, "X-Narrator-Token: wrong\r\n")[0] == 401
            assert get(srv.port, path, "X-Narrator-Token: s3cret\r\n")[0] == 200
