"""The prompt: the stripped text followed by the separator, as token ids.

The text and the separator are tokenized apart and concatenated, so trailing whitespace in a text can never merge
with the separator into a different token: every prompt ends in the same separator ids, and the class token is
always predicted from the same context. Truncation cuts the text, never the separator.
"""

from __future__ import annotations

from typing import Any

from neogen.errors import NeogenError

SEPARATOR = "\n\n###\n\n"


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
        self.max_text_tokens = max_length - len(self.separator_ids) - len(self.prefix_ids)
        if self.max_text_tokens < 1:
            raise NeogenError(f"max_length {max_length} leaves no room for text after the separator "
                              f"({len(self.separator_ids)} tokens) and special prefix ({len(self.prefix_ids)}) (fix: "
                              f"raise train.max_length above {max_length - self.max_text_tokens})")

    def text_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of the stripped texts, before truncation."""
        if not texts:
            return []
        return self.tokenizer([strip_text(t, self.separator) for t in texts], add_special_tokens=False)["input_ids"]

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids for each text; the text is cut to fit max_length, the separator always stays whole."""
        return [self.prefix_ids + ids[: self.max_text_tokens] + self.separator_ids for ids in self.text_ids(texts)]


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
