import pytest

from narrator_cli.keys import cache_key, is_key


def java_hash_key(content: str) -> str:
    """Independent reference: Java String.hashCode over UTF-16 code units, as JS computes it."""
    units = []
    for ch in content:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            units += [0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)]
        else:
            units.append(cp)
    h = 0
    for u in units:
        h = (h * 31 + u) % 2**32
    signed = h - 2**32 if h >= 2**31 else h
    return format(abs(signed), "x").rjust(8, "0")


@pytest.mark.parametrize(
    ("text", "voice", "model", "key"),
    [
        ("Hello world", "voice-id", "eleven_flash_v2_5", "5f5ac131"),
        ("This will be cached on the server!", "your-voice-id", "eleven_flash_v2_5", "1c8fd190"),
    ],
)
def test_known_values(text, voice, model, key):
    assert cache_key(text, voice, model) == key


def test_surrogate_pairs_count_as_two_code_units():
    text = "Narrate 🎬 and 𝄞"
    assert cache_key(text, "v", "m") == java_hash_key(f"{text}-v-m")
    # the astral character must not hash like its code point taken as one unit
    assert cache_key("🎬", "v", "m") != cache_key(chr(0x1F3AC % 0x10000), "v", "m")


def test_lone_surrogate_hashes_like_javascript():
    assert cache_key("\ud83c", "v", "m") == java_hash_key("\ud83c-v-m")


def text_with_hash(target: int, suffix: str) -> str:
    """A printable text whose key content hashes to ``target`` (mod 2**32)."""
    n = 7
    base = sum(ord(c) * 31 ** (len(suffix) - 1 - i) for i, c in enumerate(suffix))
    need = (target - base) * pow(31**len(suffix), -1, 2**32) - sum(65 * 31**i for i in range(n))
    need %= 2**32
    digits = []
    for _ in range(n):
        need, d = divmod(need, 31)
        digits.append(d)
    return "".join(chr(65 + d) for d in reversed(digits))


def test_minimum_int_is_80000000():
    text = text_with_hash(2**31, "-v-m")
    assert java_hash_key(f"{text}-v-m") == "80000000"
    assert cache_key(text, "v", "m") == "80000000"


def test_collisions_exist_and_keys_are_8_hex():
    assert cache_key("Aa", "v", "m") == cache_key("BB", "v", "m")
    for text in ["", "x", "a much longer line " * 50, "ünïcödé"]:
        key = cache_key(text, "voice", "model")
        assert is_key(key) and len(key) == 8


def test_text_is_not_normalised():
    assert cache_key("Hello", "v", "m") != cache_key("Hello ", "v", "m")
    assert cache_key("é", "v", "m") != cache_key("e\u0301", "v", "m")


@pytest.mark.parametrize("bad", ["", "1234567", "123456789", "ABCDEF12", "../../xx", "1234567g", None, 12345678])
def test_is_key_refuses(bad):
    assert not is_key(bad)
