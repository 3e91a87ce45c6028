"""CLIP's byte-level BPE tokenizer, on open_clip's implementation and vocabulary.

open_clip ships the same ``bpe_simple_vocab_16e6.txt.gz`` as OpenAI, so ids are
identical; this repository does not carry its own copy. The OpenAI spellings of
the special tokens (``<|startoftext|>`` / ``<|endoftext|>``) are accepted in
text as well as open_clip's (``<start_of_text>`` / ``<end_of_text>``).
"""
from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Union

import torch

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
_OPENAI_SPECIALS = {"<|startoftext|>": SOT_TOKEN_ID, "<|endoftext|>": EOT_TOKEN_ID}


class SimpleTokenizer:
    """``encode(text) -> ids`` / ``decode(ids) -> text`` with OpenAI's behaviour."""

    def __init__(self, bpe_path: Optional[str] = None):
        import regex
        from open_clip.tokenizer import SimpleTokenizer as OpenClipTokenizer, default_bpe

        inner = OpenClipTokenizer(bpe_path or default_bpe())
        if inner.encoder.get("<start_of_text>") != SOT_TOKEN_ID or inner.encoder.get("<end_of_text>") != EOT_TOKEN_ID:
            raise RuntimeError("open_clip's tokenizer vocabulary does not have CLIP's special token ids")
        for text, token_id in _OPENAI_SPECIALS.items():
            inner.encoder[text] = token_id
            inner.decoder[token_id] = text
            inner.cache[text] = text
        specials = "|".join(regex.escape(t) for t in _OPENAI_SPECIALS)
        inner.pat = regex.compile(specials + "|" + inner.pat.pattern, regex.IGNORECASE)
        self._inner = inner
        self.encoder = inner.encoder  # piece -> id
        self.decoder = inner.decoder  # id -> piece
        self.vocab_size = 49408
        self.sot_token_id = SOT_TOKEN_ID
        self.eot_token_id = EOT_TOKEN_ID

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` (cleaned, lower-cased), without start/end tokens."""
        return self._inner.encode(text)

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``; word ends become spaces."""
        return self._inner.decode([int(t) for t in tokens])


_shared: Optional[SimpleTokenizer] = None
_shared_lock = threading.Lock()


def get_tokenizer() -> SimpleTokenizer:
    """Process-wide tokenizer (built on first use: reading the vocabulary takes a moment)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SimpleTokenizer()
    return _shared


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77,
             truncate: bool = False) -> torch.Tensor:
    """Token ids ``(N, context_length)`` int64: ``[SOT] + encode(text) + [EOT]``, 0-padded.

    A sequence longer than ``context_length`` raises ``ValueError`` unless
    ``truncate`` is set; then it keeps the first ``context_length`` ids and
    puts EOT in the last slot (OpenAI's behaviour).
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2, got {context_length}")
    tokenizer = get_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [SOT_TOKEN_ID] + tokenizer.encode(text) + [EOT_TOKEN_ID]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(
                    f"text {row} is {len(ids)} tokens long (with start/end tokens), more than the "
                    f"context length {context_length}: {text[:80]!r}; shorten it or pass truncate=True")
            ids = ids[:context_length]
            ids[-1] = EOT_TOKEN_ID
        result[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result
