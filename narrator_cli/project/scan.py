"""Every narration of a Motion Canvas project, read from its source with a real parser.

A narration is a call ``X.speak(TEXT, ...)`` (or ``X.speak({text: TEXT})``) where ``X`` is a narrator made by
one of the factories in ``motion_canvas.FACTORIES``, in the same file or imported from another file of the
project under any name. Its key is computed exactly as the plugin computes it for that factory, from the
options the factory was called with; what cannot be read from the source is never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import motion_canvas as mc
from ..keys import cache_key
from . import js

SCANNED = (".ts", ".tsx", ".js", ".jsx")
SKIPPED_FOLDERS = {"node_modules"}
# a factory option that the source leaves unknown -> the setting of ours that may give it
FALLBACK_SETTINGS = {"voiceId": "voice", "modelId": "model", "model": "model", "format": "format",
                     "wordsPerMinute": "model"}
_WRAPPERS = ("as_expression", "satisfies_expression", "non_null_expression", "parenthesized_expression",
             "await_expression")


@dataclass
class Narrator:
    """A narrator as created in the source: ``const NAME = FACTORY({options})``."""

    name: str
    factory: str
    file: str
    line: int
    options: dict[str, object]  # options given as literals
    unknown: dict[str, str]  # option -> the source of a value only known at run time
    spread: str | None = None  # source of options that hide which names they give (`...base`, `config`)
    params: list[str] | None = None
    sources: list[str] = field(default_factory=list)  # where options not in the source came from
    reason: str | None = None  # why there is no key

    @property
    def provider(self) -> str:
        return mc.FACTORIES[self.factory].provider


@dataclass
class Narration:
    file: str  # relative to the project root, with /
    line: int  # of the text literal (1-based)
    column: int  # in characters (1-based)
    narrator: Narrator
    text: str | None  # None: dynamic
    expression: str | None = None  # the source of a dynamic text
    key: str | None = None

    @property
    def dynamic(self) -> bool:
        return self.text is None

    def as_dict(self) -> dict[str, object]:
        n = self.narrator
        d: dict[str, object] = {"file": self.file, "line": self.line, "column": self.column, "text": self.text,
                                "factory": n.factory, "narrator": n.name, "provider": n.provider,
                                "params": n.params, "key": self.key, "dynamic": self.dynamic}
        if self.dynamic:
            d["expression"] = self.expression
        if n.sources:
            d["optionSources"] = n.sources
        if n.reason and not self.dynamic:
            d["reason"] = n.reason
        return d


@dataclass
class Scan:
    root: Path
    narrations: list[Narration]
    narrators: list[Narrator]
    warnings: list[str]
    files: int


@dataclass
class _Module:
    """What one file declares, imports, exports and calls."""

    path: Path
    source: bytes = b""
    narrators: dict[str, Narrator] = field(default_factory=dict)
    imports: dict[str, tuple[Path | None, str]] = field(default_factory=dict)  # local -> (module, name)
    namespaces: dict[str, Path | None] = field(default_factory=dict)  # import * as N
    factories: dict[str, str] = field(default_factory=dict)  # local alias -> factory
    exports: dict[str, str] = field(default_factory=dict)  # exported -> local
    reexports: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    stars: list[Path | None] = field(default_factory=list)
    calls: list[Any] = field(default_factory=list)  # `.speak(...)` call nodes
    error: str | None = None


def find_root(start: Path) -> Path:
    """The project root: the nearest folder upwards with package.json or narrator.toml (else ``start``)."""
    from ..config import project_root

    return project_root(start) or start.absolute()


def scan(path: Path, configured: dict[str, dict] | None = None, fallback: dict[str, object] | None = None) -> Scan:
    """The narrations under ``path`` (a project folder or one file). ``configured``: ``[narrators.NAME]``
    tables; ``fallback``: our voice/model/format settings, for options the source does not give."""
    path = Path(os.path.abspath(path))
    if path.is_file():
        root, files = find_root(path.parent), [path]
    elif path.is_dir():
        root, files = path, list(_source_files(path))
    else:
        from ..errors import UsageError

        raise UsageError(f"{path}: no such file or folder")
    scanner = _Scanner(root, configured or {}, fallback or {})
    narrations: list[Narration] = []
    for file in files:
        narrations.extend(scanner.narrations_of(file))
    for nar in scanner.narrators():
        scanner.key_params(nar)
    for n in narrations:
        if n.text is not None and n.narrator.params is not None:
            n.key = cache_key(n.text, *n.narrator.params)
    return Scan(root, narrations, scanner.narrators(), scanner.warnings, len(files))


def _source_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(SCANNED) and not name.endswith(".d.ts"):
                found.append(Path(folder) / name)
    return found


class _Scanner:
    def __init__(self, root: Path, configured: dict[str, dict], fallback: dict[str, object]) -> None:
        self.root = root
        self.configured = configured
        self.fallback = fallback
        self.modules: dict[Path, _Module] = {}
        self.warnings: list[str] = []

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def narrators(self) -> list[Narrator]:
        return [n for m in self.modules.values() for n in m.narrators.values()]

    # -- reading files

    def module(self, path: Path) -> _Module:
        if path not in self.modules:
            self.modules[path] = mod = _Module(path)
            try:
                source = path.read_bytes()
                mod.source = source[3:] if source.startswith(b"\xef\xbb\xbf") else source
                _read(mod, js.parse(path, mod.source), self)
            except OSError as exc:
                mod.error = f"cannot read: {exc.strerror}"
            except ValueError as exc:
                mod.error = str(exc)
            if mod.error:
                self.warnings.append(f"{self.rel(path)}: {mod.error}; its narrations are not listed")
        return self.modules[path]

    def resolve_import(self, importer: Path, spec: str) -> Path | None:
        """A relative import as a bundler resolves it: with or without extension, a folder's index file,
        and a `.js` name standing for the `.ts` file it is compiled from."""
        if not spec.startswith("."):
            return None
        base = Path(os.path.normpath(importer.parent / spec))
        stems = [base]
        if base.suffix in (".js", ".jsx", ".mjs", ".cjs"):
            stems.append(base.with_suffix(""))
        candidates = [base] + [Path(f"{s}{suffix}") for s in stems for suffix in js.SUFFIXES]
        candidates += [base / f"index{suffix}" for suffix in js.SUFFIXES]
        for candidate in candidates:
            if candidate.suffix in js.SUFFIXES and candidate.is_file():
                return candidate
        return None

    # -- who is a narrator

    def local(self, mod: _Module, name: str, seen: set) -> Narrator | None:
        if name in mod.narrators:
            return mod.narrators[name]
        if name in mod.imports:
            target, imported = mod.imports[name]
            return self.exported(target, imported, seen)
        return None

    def exported(self, path: Path | None, name: str, seen: set) -> Narrator | None:
        if path is None or (path, name) in seen:
            return None
        seen.add((path, name))
        mod = self.module(path)
        if name in mod.exports:
            return self.local(mod, mod.exports[name], seen)
        if name in mod.reexports:
            return self.exported(*mod.reexports[name], seen)
        if name != "default":
            for star in mod.stars:
                if found := self.exported(star, name, seen):
                    return found
        return None

    def speaker(self, mod: _Module, node: Any) -> Narrator | None:
        node = _unwrap(node)
        if node.type == "identifier":
            return self.local(mod, js.text_of(node), set())
        if node.type == "member_expression":
            obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
            if obj is not None and prop is not None and _unwrap(obj).type == "identifier":
                space = js.text_of(_unwrap(obj))
                if space in mod.namespaces:
                    return self.exported(mod.namespaces[space], js.text_of(prop), set())
        return None

    # -- narrations

    def narrations_of(self, path: Path) -> list[Narration]:
        mod = self.module(path)
        found = []
        for call in mod.calls:
            callee = call.child_by_field_name("function")
            narrator = self.speaker(mod, callee.child_by_field_name("object"))
            if narrator is None:
                continue
            args = _arguments(call)
            text_node = args[0] if args else call.child_by_field_name("arguments")
            if args and args[0].type == "object":
                text_node = _option(args[0], mc.SPEAK_TEXT_OPTION) or args[0]
            line, column = _position(mod.source, text_node)
            try:
                text: str | None = js.string_value(text_node)
                expression = None
            except js.NotLiteral:
                text, expression = None, js.text_of(text_node)[:200]
            found.append(Narration(self.rel(path), line, column, narrator, text, expression))
        return found

    def key_params(self, nar: Narrator) -> None:
        """The narrator's key parameters, from its literal options, then ``[narrators.NAME]``, then our
        settings; or the reason there are none."""
        options = dict(nar.options)
        table = f"[narrators.{nar.name}]"
        given = self.configured.get(nar.name, {})
        unknown = []
        for option in mc.KEY_OPTIONS[nar.factory]:
            if option in nar.options:
                continue
            origin = nar.unknown.get(option) or nar.spread
            if origin is None:
                continue  # not given: the factory's default
            setting = FALLBACK_SETTINGS.get(option)
            if option in given:
                options[option] = given[option]
                nar.sources.append(f"{option} from narrator.toml {table}")
            elif setting and self.fallback.get(setting) is not None:
                options[option] = self.fallback[setting]
                nar.sources.append(f"{option} from the {setting} setting")
            else:
                unknown.append(f"{option} from {origin}")
        if unknown:
            nar.reason = f"unknown: {', '.join(unknown)}; give it in {table} of narrator.toml"
        else:
            nar.params = mc.FACTORIES[nar.factory].key_params(options)


def _read(mod: _Module, root: Any, scanner: _Scanner) -> None:
    """One walk over the tree: imports, exports, narrator declarations and `.speak(...)` calls."""
    declarators = []
    defaults = []
    stack = [root]
    while stack:
        node = stack.pop()
        kind = node.type
        if kind == "import_statement":
            _read_import(mod, node, scanner)
            continue
        if kind == "export_statement":
            _read_export(mod, node, scanner, defaults)
        elif kind == "variable_declarator":
            declarators.append(node)
        elif kind == "call_expression":
            callee = node.child_by_field_name("function")
            if callee is not None and callee.type == "member_expression":
                prop = callee.child_by_field_name("property")
                if prop is not None and prop.text == mc.SPEAK_METHOD.encode():
                    mod.calls.append(node)
        stack.extend(reversed(node.named_children))
    for node in declarators:
        name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
        if name is not None and name.type == "identifier" and value is not None:
            _declare(mod, js.text_of(name), value, scanner)
    for value in defaults:
        if _declare(mod, "default", value, scanner):
            mod.exports["default"] = "default"
    mod.calls.sort(key=lambda n: n.start_byte)


def _declare(mod: _Module, name: str, value: Any, scanner: _Scanner) -> bool:
    value = _unwrap(value)
    if value.type != "call_expression":
        return False
    callee = _unwrap(value.child_by_field_name("function"))
    if callee.type == "member_expression":  # narrator.createMockNarrator(...) after `import * as narrator`
        callee = callee.child_by_field_name("property")
    callee_name = js.text_of(callee)
    factory = mod.factories.get(callee_name, callee_name)
    if factory not in mc.FACTORIES:
        return False
    args = _arguments(value)
    nar = Narrator(name, factory, scanner.rel(mod.path), value.start_point[0] + 1, {}, {})
    if args and args[0].type == "object":
        for prop in args[0].named_children:
            if prop.type == "pair":
                key_node = prop.child_by_field_name("key")
                try:
                    key = js.string_value(key_node) if key_node.type == "string" else js.text_of(key_node)
                except js.NotLiteral:
                    key = js.text_of(key_node)
                try:
                    nar.options[key] = js.literal_value(prop.child_by_field_name("value"))
                except js.NotLiteral:
                    nar.unknown[key] = js.text_of(prop.child_by_field_name("value"))[:80]
                if key_node.type == "computed_property_name":
                    nar.spread = js.text_of(prop)[:80]
            elif prop.type == "shorthand_property_identifier":
                nar.unknown[js.text_of(prop)] = js.text_of(prop)
            elif prop.type == "spread_element":
                nar.spread = js.text_of(prop)[:80]
    elif args and args[0].type not in ("undefined",) and js.text_of(args[0]) != "undefined":
        nar.spread = js.text_of(args[0])[:80]
    mod.narrators[name] = nar
    return True


def _read_import(mod: _Module, node: Any, scanner: _Scanner) -> None:
    source = node.child_by_field_name("source")
    if source is None:
        return
    spec = js.string_value(source)
    target = scanner.resolve_import(mod.path, spec)
    clause = next((c for c in node.named_children if c.type == "import_clause"), None)
    if clause is None:
        return
    for part in clause.named_children:
        if part.type == "identifier":
            mod.imports[js.text_of(part)] = (target, "default")
        elif part.type == "namespace_import":
            ident = next((c for c in part.named_children if c.type == "identifier"), None)
            if ident is not None:
                mod.namespaces[js.text_of(ident)] = target
        elif part.type == "named_imports":
            for imported, local in _specifiers(part, "import_specifier"):
                if target is None and imported in mc.FACTORIES:
                    mod.factories[local] = imported
                else:
                    mod.imports[local] = (target, imported)


def _specifiers(clause: Any, kind: str) -> Iterator[tuple[str, str]]:
    """(name, alias or name) of each ``{a as b}`` specifier of an import or export clause."""
    for spec in clause.named_children:
        if spec.type == kind:
            name = _name(spec.child_by_field_name("name"))
            alias = spec.child_by_field_name("alias")
            yield name, _name(alias) if alias is not None else name


def _read_export(mod: _Module, node: Any, scanner: _Scanner, defaults: list) -> None:
    source = node.child_by_field_name("source")
    target = scanner.resolve_import(mod.path, js.string_value(source)) if source is not None else None
    clause = next((c for c in node.named_children if c.type == "export_clause"), None)
    if clause is not None:
        for name, exported in _specifiers(clause, "export_specifier"):
            if source is not None:
                mod.reexports[exported] = (target, name)
            else:
                mod.exports[exported] = name
        return
    if source is not None:
        if not any(c.type == "namespace_export" for c in node.named_children):
            mod.stars.append(target)
        return
    declaration = node.child_by_field_name("declaration")
    if declaration is not None and declaration.type in ("lexical_declaration", "variable_declaration"):
        for decl in declaration.named_children:
            name = decl.child_by_field_name("name") if decl.type == "variable_declarator" else None
            if name is not None and name.type == "identifier":
                mod.exports[js.text_of(name)] = js.text_of(name)
    value = node.child_by_field_name("value")
    if value is not None:
        if _unwrap(value).type == "identifier":
            mod.exports["default"] = js.text_of(_unwrap(value))
        else:
            defaults.append(value)


def _name(node: Any) -> str:
    """An import or export name: an identifier, or a string (`export {a as "b c"}`)."""
    if node.type == "string":
        return js.string_value(node)
    return js.text_of(node)


def _unwrap(node: Any) -> Any:
    while node is not None and node.type in _WRAPPERS and node.named_child_count >= 1:
        node = node.named_children[0]
    return node


def _arguments(call: Any) -> list[Any]:
    args = call.child_by_field_name("arguments")
    if args is None:
        return []
    return [c for c in args.named_children if c.type != "comment"]


def _option(obj: Any, name: str) -> Any:
    """The value node of ``name: ...`` in an object literal, else None."""
    for prop in obj.named_children:
        if prop.type == "pair":
            key = prop.child_by_field_name("key")
            try:
                key_text = js.string_value(key) if key.type == "string" else js.text_of(key)
            except js.NotLiteral:
                continue
            if key_text == name:
                return prop.child_by_field_name("value")
    return None


def _position(source: bytes, node: Any) -> tuple[int, int]:
    """1-based line and column (in characters, not bytes) where ``node`` starts."""
    row, byte_col = node.start_point
    start = node.start_byte
    return row + 1, len(source[start - byte_col:start].decode("utf-8", "replace")) + 1


def as_line(n: Narration) -> Any:
    """The ``resolve.Line`` of a keyed narration: its text, the first two key parameters as voice and model
    (what the cache's metadata records), and its key."""
    from ..resolve import Line

    params = n.narrator.params or []
    assert n.text is not None and n.key is not None
    return Line(n.text, params[0] if params else "", params[1] if len(params) > 1 else "", n.key)
