"""Long texts cut into pieces whose tokens, joined, are the whole text's tokens.

Shared by tokenizer training and tokenization (a module of its own, so that a change to
how token files are written does not retrain the tokenizer)."""

from __future__ import annotations

import re
from collections.abc import Iterator

# A space that follows a non-whitespace character starts a new pre-token in every GPT-2
# style split pattern (` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` and the whitespace runs):
# no pre-token holds a non-whitespace character and the space after it. Python's `\S` is
# narrower than the Unicode non-whitespace those patterns use, so it never admits a false cut.
# The same holds for a newline under the GPT-2 pattern that `regmix train-tokenizer` uses, but
# not under every pretrained one (Llama 3 keeps ".\n" together), so it is only the fallback.
_CUT_BEFORE = {" ": re.compile(r"(?<=\S) "), "\n": re.compile(r"(?<=\S)\n")}


def _last_cut(char: str, text: str, start: int, limit: int) -> int | None:
    """The last p in (start, limit] with text[p] == char after a non-whitespace character, or None."""
    pattern = _CUT_BEFORE[char]
    p = text.rfind(char, start + 1, limit + 1)
    if p > start and not text[p - 1].isspace():  # the usual case: no scan needed
        return p
    last = None
    for match in pattern.finditer(text, start + 1, limit + 1):
        last = match.start()
    return last


def document_pieces(text: str, max_chars: int) -> Iterator[str]:
    """`text` as consecutive pieces of at most `max_chars` characters whose tokens, joined,
    are the tokens of the whole text (a text that fits is yielded as it is).

    Each cut goes just before the last space within reach that follows a non-whitespace
    character: a boundary the pre-tokenizer makes anyway (byte-level BPE, GPT-2/NeoX/Llama 3
    patterns, Metaspace with split), so the tokens are identical. With no such space within
    `max_chars`, before a newline that follows a non-whitespace character (identical under
    the GPT-2 pattern of our trained BPE); with neither (e.g. base64), at `max_chars`
    exactly, where the one word across the cut becomes two words: tokens may differ there,
    and only there.
    """
    start, end = 0, len(text)
    while end - start > max_chars:
        limit = start + max_chars
        cut = _last_cut(" ", text, start, limit) or _last_cut("\n", text, start, limit) or limit
        yield text[start:cut]
        start = cut
    yield text[start:] if start else text
