"""Byte tokenizer: exact round trip for any valid Unicode text, clear errors otherwise."""

import pytest
import torch

from dsq.tiny.tokenizer import ByteTokenizer, TokenizerError

TEXTS = [
    "",
    "def f(x):\n    return x ** 2  # square\n",
    "naïve café — Ærøskøbing",
    "日本語のテキスト, 中文, 한국어",
    "emoji 🐍🚀 and a NUL \x00 and tab\t",
    "\U0010ffff edge of Unicode",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tiny_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids, dtype=torch.int64)) == text


def test_tiny_non_ascii_is_multibyte():
    tok = ByteTokenizer()
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.encode("🐍") == [0xF0, 0x9F, 0x90, 0x8D]
    assert tok.encode_bytes("é".encode()).tolist() == [0xC3, 0xA9]


def test_tiny_tokenizer_errors():
    tok = ByteTokenizer()
    with pytest.raises(TokenizerError, match="not valid Unicode"):
        tok.encode("\ud800")
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        tok.decode([0xC3])
    assert tok.decode([0x61, 0xC3], errors="replace") == "a\ufffd"
    with pytest.raises(TokenizerError, match="0..255"):
        tok.decode([256])
    with pytest.raises(TokenizerError, match="expects str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
