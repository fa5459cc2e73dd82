"""The folder the project's Motion Canvas narrator plugin serves, read from its vite.config with the parser
that reads the scenes: ``motionCanvasNarratorPlugin({audioPath})``, or the plugin's own default folder."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

from .. import motion_canvas as mc
from . import js

CONFIG_NAMES = ("vite.config.ts", "vite.config.js", "vite.config.mjs", "vite.config.mts")


class EditorFolder(NamedTuple):
    config: Path  # the vite.config that says so
    folder: str | None  # relative to the project root; None: not known from the source
    warning: str | None = None


def find_config(root: Path) -> Path | None:
    return next((root / n for n in CONFIG_NAMES if (root / n).is_file()), None)


MEMO_ENTRIES = 64  # vite configs remembered (one a project)


def remembered_editor_folder(root: Path, memo: Path) -> EditorFolder | None:
    """``editor_folder``, remembered in ``memo`` (a small JSON file in the user's cache folder) by the
    vite.config's path, size and modification time: every command asks this, and parsing the config
    (importing tree-sitter) costs a cache-hit ``speak`` more than its whole budget allows."""
    import json
    import os

    config = find_config(root)
    if config is None:
        return None
    try:
        st = os.stat(config)
        stamp = [st.st_mtime_ns, st.st_size]
    except OSError:
        return editor_folder(root)
    try:
        remembered = json.loads(memo.read_bytes())
        if not isinstance(remembered, dict):
            remembered = {}
    except (OSError, ValueError):
        remembered = {}
    hit = remembered.get(str(config))
    if isinstance(hit, list) and len(hit) == 4 and hit[:2] == stamp:
        return None if hit[2] is None and hit[3] is None else EditorFolder(config, hit[2], hit[3])
    found = editor_folder(root)
    remembered.pop(str(config), None)
    remembered[str(config)] = [*stamp, found.folder if found else None, found.warning if found else None]
    _write_memo(memo, dict(list(remembered.items())[-MEMO_ENTRIES:]))
    return found


def _write_memo(memo: Path, remembered: dict) -> None:
    """Best effort and atomic: a memo that cannot be written only costs the next command a parse."""
    import json
    import os
    import tempfile

    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".narrator-", suffix=".tmp", dir=memo.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(remembered, fh)
        os.replace(tmp, memo)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def editor_folder(root: Path) -> EditorFolder | None:
    """What the plugin call in ``root``'s vite.config says; None without a vite.config or plugin call."""
    config = find_config(root)
    if config is None:
        return None
    try:
        tree = js.parse(config, config.read_bytes())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return EditorFolder(config, None, f"{config.name}: cannot read the narrator plugin's folder ({reason})")
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.type == "call_expression":
            callee = node.child_by_field_name("function")
            if callee is not None and js.text_of(callee) == mc.PLUGIN_FACTORY:
                return _folder(config, node)
        stack.extend(reversed(node.named_children))
    return None


def _folder(config: Path, call: object) -> EditorFolder:
    args = [c for c in call.child_by_field_name("arguments").named_children if c.type != "comment"]  # type: ignore[attr-defined]
    if not args:
        return EditorFolder(config, mc.PLUGIN_FOLDER)
    options = args[0]
    if options.type != "object":
        return EditorFolder(config, None, f"{config.name}: {mc.PLUGIN_FACTORY}({js.text_of(options)[:60]}) is not "
                            "an object literal; set audio_path in narrator.toml")
    for prop in options.named_children:
        if prop.type == "pair" and js.text_of(prop.child_by_field_name("key")).strip("'\"") == "audioPath":
            value = prop.child_by_field_name("value")
            try:
                folder = js.literal_value(value)
            except js.NotLiteral:
                folder = ""
            if isinstance(folder, str) and folder:
                return EditorFolder(config, folder)
            return EditorFolder(config, None, f"{config.name}: audioPath {js.text_of(value)[:60]} is not a literal; "
                                "set audio_path in narrator.toml")
        if prop.type == "shorthand_property_identifier" and js.text_of(prop) == "audioPath" or (
                prop.type == "spread_element"):
            return EditorFolder(config, None, f"{config.name}: audioPath may come from {js.text_of(prop)[:60]}, "
                                "which is not a literal; set audio_path in narrator.toml")
    return EditorFolder(config, mc.PLUGIN_FOLDER)
