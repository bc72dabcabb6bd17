"""The prompt: the stripped text followed by the separator, as token ids.

The text and the separator are tokenized apart and concatenated, so trailing whitespace in a text can never merge
with the separator into a different token: every prompt ends in the same separator ids, and the class token is
always predicted from the same context. Truncation cuts the text, never the separator.

The work per text is bounded by the token budget, not by the text's length: a text longer than a few characters per
id of the budget is tokenized as a prefix of its characters, doubled only while the prefix yields too few ids
(`bounded_ids`), so a 50 MB line costs what its first few thousand characters cost, with the ids the whole text
would start with.
"""

from __future__ import annotations

import re
from typing import Any

from neogen.errors import NeogenError

SEPARATOR = "\n\n###\n\n"
# The first prefix holds this many characters per wanted id (plus the slack): English runs at about 4 to 5 characters
# per id, so the first prefix nearly always suffices; runs of long tokens ("----------------") get it doubled.
CHARS_PER_TOKEN = 8
SLACK_CHARS = 256
# A safe cut: a space between two letters. Every pre-tokenizer of byte-level BPE (GPT-2, Llama-3, Qwen) and
# SentencePiece's Metaspace splits there whatever follows, so the ids of the text before it are the first ids of
# the whole text. ([^\W\d_] is a letter.)
SAFE_CUT = re.compile(r"(?<=[^\W\d_]) (?=[^\W\d_])")
# Where a prefix has no safe cut in its second half (one long word: a base64 blob, a run of dashes, a sentence of
# CJK), its ids are taken but for this many at its end: BPE merges are local, and cutting a word has been seen to
# change only its last few ids.
UNTRUSTED_IDS = 64


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before any text (e.g. Llama's BOS); empty for GPT-2/GPT-Neo."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(plain) and with_special[len(with_special) - len(plain):] == plain:
        return list(with_special[: len(with_special) - len(plain)])
    return []


class PromptEncoder:
    """Turns texts into prompt ids: prefix + text ids (truncated) + separator ids."""

    def __init__(self, tokenizer: Any, max_length: int, separator: str = SEPARATOR) -> None:
        self.tokenizer = tokenizer
        self.separator = separator
        self.separator_ids: list[int] = tokenizer(separator, add_special_tokens=False)["input_ids"]
        self.prefix_ids = special_prefix(tokenizer)
        self.max_length = max_length
        added = getattr(tokenizer, "get_added_vocab", None)
        self.added_tokens = tuple(added()) if callable(added) else ()
        self.max_text_tokens = max_length - len(self.separator_ids) - len(self.prefix_ids)
        if self.max_text_tokens < 1:
            raise NeogenError(f"max_length {max_length} leaves no room for text after the separator "
                              f"({len(self.separator_ids)} tokens) and special prefix ({len(self.prefix_ids)}) (fix: "
                              f"raise train.max_length above {max_length - self.max_text_tokens})")

    def text_ids(self, texts: list[str], limit: int | None = None) -> list[list[int]]:
        """The first `limit` token ids of each stripped text: those that tokenizing the whole text starts with.

        The default limit, max_text_tokens + 1, tells the texts that fit (at most max_text_tokens ids) from those
        that the prompt cuts (one more). The work per text is bounded by the limit, not by the text's length
        (`bounded_ids`, which also says when the ids rest on BPE's locality rather than on a safe cut).
        """
        limit = self.max_text_tokens + 1 if limit is None else limit
        return bounded_ids(self.tokenizer, [strip_text(t, self.separator) for t in texts], limit, self.added_tokens)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids for each text; the text is cut to fit max_length, the separator always stays whole."""
        return [self.prefix_ids + ids + self.separator_ids for ids in self.text_ids(texts, self.max_text_tokens)]


def bounded_ids(tokenizer: Any, texts: list[str], limit: int, added_tokens: tuple[str, ...] = ()) -> list[list[int]]:
    """The first `limit` ids of each text's tokenization, tokenizing only a prefix of its characters.

    A text within the first prefix (CHARS_PER_TOKEN per id, plus SLACK_CHARS) is tokenized whole, as before. A longer
    one is tokenized up to its last safe cut in the prefix's second half (`_cut`), whose ids are exactly the first ids
    of the whole text; where there is none, up to the prefix's end, less UNTRUSTED_IDS ids. A prefix that yields too
    few ids is doubled and tried again, in one batch with the others, so the characters tokenized per text stay
    within a small multiple of what its first `limit` ids span.
    """
    out: list[list[int]] = [[] for _ in texts]
    todo = list(range(len(texts)))
    chars = CHARS_PER_TOKEN * limit + SLACK_CHARS
    while todo:
        cuts = {i: _cut(texts[i], chars, added_tokens) for i in todo}
        encoded = tokenizer([texts[i][: cuts[i] or chars] for i in todo], add_special_tokens=False)["input_ids"]
        longer = []
        for i, ids in zip(todo, encoded, strict=True):
            sure = len(ids) if len(texts[i]) <= chars or cuts[i] else len(ids) - UNTRUSTED_IDS
            if len(texts[i]) <= chars or sure >= limit:
                out[i] = list(ids[:limit])
            else:
                longer.append(i)
        todo = longer
        chars *= 2
    return out


def _cut(text: str, chars: int, added_tokens: tuple[str, ...]) -> int | None:
    """The last safe cut (SAFE_CUT) in the second half of text[:chars], away from any added token; else None.

    An added token (e.g. `<|endoftext|>`) is matched before pre-tokenization and may strip the whitespace around it,
    so a cut with one in reach on either side is passed over. None also for a text within `chars`.
    """
    if len(text) <= chars:
        return None
    reach = max(map(len, added_tokens), default=0) + 1
    for match in reversed(list(SAFE_CUT.finditer(text, chars // 2, chars - 1))):
        cut = match.start()
        window = text[max(0, cut - reach): cut + reach + 1].casefold()
        if not any(token.casefold() in window for token in added_tokens):
            return cut
    return None


def strip_text(text: str, separator: str = SEPARATOR) -> str:
    """The text without surrounding whitespace or a trailing separator (an OpenAI-style prompt is accepted as is)."""
    text = text.strip()
    # The separator less its trailing whitespace ("\n\n###"): a text that merely ends in "###" keeps it.
    end = separator.rstrip()
    if end.strip() and text.endswith(end):
        text = text[: -len(end)].rstrip()
    return text


def prompt_text(text: str, separator: str = SEPARATOR) -> str:
    """The prompt as text, as it is written to OpenAI-style JSONL."""
    return strip_text(text, separator) + separator
