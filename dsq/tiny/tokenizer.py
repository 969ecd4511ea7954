"""Byte-level tokenizer of the embedded tiny model: token id = UTF-8 byte value, vocabulary of 256.

``encode(s) = list(s.encode("utf-8"))`` and ``decode(ids) = bytes(ids).decode("utf-8")``, so
``decode(encode(s)) == s`` for every string that is valid Unicode (any text a UTF-8 file can hold).
There are no special tokens: the model sees raw bytes, and a model-generated id sequence that is not
valid UTF-8 can be decoded with ``errors="replace"``. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dsq.errors import DsqError

VOCAB_SIZE = 256


class TokenizerError(DsqError, ValueError):
    """Text that cannot be encoded (e.g. lone surrogates) or ids outside 0..255."""


class ByteTokenizer:
    """UTF-8 bytes as token ids (0..255)."""

    vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: one per UTF-8 byte."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects str, got {type(text).__name__}")
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"text is not valid Unicode at index {exc.start}: {exc.reason}") from exc

    def decode(self, ids: Iterable[int] | torch.Tensor, errors: str = "strict") -> str:
        """Text of ``ids``; ``errors`` as in :meth:`bytes.decode` ("strict" raises on invalid UTF-8)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = list(ids)
        bad = [i for i in ids if not (isinstance(i, int) and 0 <= i < VOCAB_SIZE)]
        if bad:
            raise TokenizerError(f"token ids must be integers in 0..255, got {bad[:5]}")
        try:
            return bytes(ids).decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"ids are not valid UTF-8 at byte {exc.start}; pass errors='replace'") from exc

    def encode_bytes(self, data: bytes) -> torch.Tensor:
        """int64 tensor [len(data)] of raw bytes (how training and evaluation read text files)."""
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
