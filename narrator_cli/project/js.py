"""Reading JavaScript and TypeScript with tree-sitter: a parser per file type, and literal values decoded
exactly as JavaScript does, so that a key computed from a scanned line is the key the editor computes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mts", ".mjs", ".cts", ".cjs")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_LINE_TERMINATORS = ("\n", "\r", "\u2028", "\u2029")


class NotLiteral(Exception):
    """An expression whose value only exists when the program runs."""


@cache
def parser_for(suffix: str) -> Any:
    """TypeScript for .ts, TSX for .tsx, JavaScript (which parses JSX) for .js and .jsx."""
    from tree_sitter import Language, Parser

    if suffix in (".ts", ".mts", ".cts"):
        import tree_sitter_typescript as grammar

        return Parser(Language(grammar.language_typescript()))
    if suffix == ".tsx":
        import tree_sitter_typescript as grammar

        return Parser(Language(grammar.language_tsx()))
    import tree_sitter_javascript as js_grammar

    return Parser(Language(js_grammar.language()))


def parse(path: Path, source: bytes) -> Any:
    """The syntax tree of ``source``; ValueError naming the first syntax error."""
    tree = parser_for(path.suffix)
    root = tree.parse(source).root_node
    if root.has_error:
        bad = _first_error(root)
        row, col = (bad.start_point if bad is not None else root.start_point)
        raise ValueError(f"syntax error at line {row + 1}, column {col + 1}")
    return root


def _first_error(node: Any) -> Any:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.is_error or n.is_missing:
            return n
        stack.extend(reversed([c for c in n.children if c.has_error or c.is_error or c.is_missing]))
    return None


def text_of(node: Any) -> str:
    return node.text.decode("utf-8", "replace")


def string_value(node: Any) -> str:
    """The value of a string literal or of a template literal without substitutions; NotLiteral otherwise."""
    if node.type == "parenthesized_expression" and node.named_child_count == 1:
        return string_value(node.named_children[0])
    raw = node.text.decode("utf-8", "surrogatepass")
    try:
        if node.type == "string":
            return decode_escapes(raw[1:-1])
        if node.type == "template_string" and not any(c.type == "template_substitution" for c in node.children):
            return decode_escapes(raw[1:-1].replace("\r\n", "\n").replace("\r", "\n"))
    except ValueError:  # a malformed escape (\x4, \u{110000}): not a value JavaScript would accept
        pass
    raise NotLiteral


def decode_escapes(raw: str) -> str:
    """A literal's body as JavaScript reads it. ``\\uD83D\\uDE00`` becomes one code point; a lone surrogate
    from an escape stays lone (keys hash it as the single UTF-16 unit it is)."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = raw[i + 1]
        i += 2
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
        elif e == "x":
            out.append(chr(int(raw[i:i + 2], 16)))
            i += 2
        elif e == "u" and raw[i:i + 1] == "{":
            end = raw.index("}", i)
            out.append(chr(int(raw[i + 1:end], 16)))
            i = end + 1
        elif e == "u":
            out.append(chr(int(raw[i:i + 4], 16)))
            i += 4
        elif e in "01234567":  # \0, and legacy octal escapes as a script (not a module) reads them
            j = i
            limit = i + (2 if e in "0123" else 1)
            while j < limit and j < n and raw[j] in "01234567":
                j += 1
            out.append(chr(int(e + raw[i:j], 8)))
            i = j
        elif e == "\r":  # line continuation; CRLF is one line terminator
            i += raw[i:i + 1] == "\n"
        elif e in _LINE_TERMINATORS:
            pass
        else:
            out.append(e)
    return _join_surrogate_pairs("".join(out))


def _join_surrogate_pairs(text: str) -> str:
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def literal_value(node: Any) -> object:
    """A string, number, boolean, null or undefined literal (None for both of the last); NotLiteral otherwise."""
    kind = node.type
    if kind in ("string", "template_string", "parenthesized_expression"):
        return string_value(node)
    if kind == "number":
        return number_value(text_of(node))
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("null", "undefined") or (kind == "identifier" and text_of(node) == "undefined"):
        return None
    if kind == "unary_expression" and node.child_count == 2 and text_of(node.children[0]) in ("-", "+"):
        value = literal_value(node.children[1])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if text_of(node.children[0]) == "-" else value
    raise NotLiteral


def number_value(raw: str) -> float:
    """A JavaScript numeric literal: 120, 1_000, 0x78, 0o170, 0b1, 1.5e3, .5 (a BigInt is not an option)."""
    text = raw.replace("_", "").lower()
    if text.endswith("n"):
        raise NotLiteral
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if text.startswith(prefix):
            return float(int(text[2:], base))
    if len(text) > 1 and text[0] == "0" and text.isdigit():  # legacy octal (08 and 09 are decimal)
        return float(int(text, 8)) if all(c in "01234567" for c in text) else float(text)
    return float(text)
