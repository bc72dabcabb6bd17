"""The label codec: every class is exactly one token of the base model's tokenizer, with a leading space.

A label whose completion word the user chose (`data.label_words`, e.g. NUM -> " number") gets that word. Any other
label that is one token (" Physics") is its own completion. A label that is several tokens, or whose natural
token is taken by another label, gets a single-token alias, chosen deterministically from the label's own first
token, then its later words ("NUM:date" -> " date"), then its lowercase and capitalised forms, then a fixed pool of
short word tokens. The codec is saved with the run and refuses to load against a tokenizer whose vocabulary differs
from the one it was built with.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neogen.errors import NeogenError
from neogen.prompt import SEPARATOR

CODEC_VERSION = 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the vocabulary (token -> id); two tokenizers with the same one encode labels alike."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def single_token(tokenizer: Any, text: str) -> int | None:
    """The token id if `text` encodes to exactly one token, else None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _round_trips(tokenizer: Any, token_id: int) -> str | None:
    """The token's text if it starts with a space and encodes back to exactly this token, else None."""
    text = tokenizer.decode([token_id])
    if len(text) < 2 or not text.startswith(" ") or text[1:].strip() != text[1:]:
        return None
    return text if single_token(tokenizer, text) == token_id else None


def word_token(tokenizer: Any, word: str) -> int | None:
    """The id of ' word' if it is one token that decodes back to itself (what a completion must be), else None."""
    token_id = single_token(tokenizer, " " + str(word).strip())
    return token_id if token_id is not None and _round_trips(tokenizer, token_id) else None


def _word_tokens(tokenizer: Any) -> Iterator[int]:
    """Short word tokens (' word') in vocabulary order: the last-resort alias pool, the same for every label set."""
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = tokenizer.convert_tokens_to_string([token])
        if word.startswith(" ") and word[1:].isalpha() and len(word) > 2:
            yield token_id


def _alias_candidates(tokenizer: Any, label: str, pool: Iterator[int]) -> Iterator[int]:
    # The label's own first token keeps most of the pretrained meaning (" Sci" for "Sci/Tech").
    # Next, the label's later words, before other casings of the first: hierarchical labels share their first word
    # ("NUM:date", "NUM:money"), and " date" says more than " num" or a letter from the pool.
    later = [v for part in re.split(r"[\W_]+", label)[1:] if part for v in (part, part.lower(), part.capitalize())]
    for variant in (label, *later, label.lower(), label.capitalize()):
        ids = tokenizer(" " + variant, add_special_tokens=False)["input_ids"]
        if ids:
            yield ids[0]
    # Then a fixed pool: capital letters, then word tokens. The word pool is one iterator shared by all labels:
    # what an earlier label passed over is taken or unusable, so resuming gives the same aliases as restarting.
    for letter in string.ascii_uppercase:
        token_id = single_token(tokenizer, " " + letter)
        if token_id is not None:
            yield token_id
    for token_id in pool:  # not `yield from`: closing this generator must not close the shared pool
        yield token_id


def _chosen_words(names: list[str], words: Mapping[str, str], tokenizer: Any) -> dict[str, int]:
    """Label -> token id of the user's completion words, or an error listing every word that cannot serve."""
    problems = []
    chosen: dict[str, int] = {}
    for label, word in words.items():
        text = " " + str(word).strip()
        token_id = word_token(tokenizer, word)
        if label not in names:
            problems.append(f"{label!r} is not a training label (labels: {names})")
        elif token_id is None:
            pieces = [tokenizer.decode([t]) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
            problems.append(f"{label!r}: {text!r} is {len(pieces)} tokens {pieces}, not one; pick a shorter or "
                            "more common word")
        elif token_id in chosen.values():
            other = next(lab for lab, t in chosen.items() if t == token_id)
            problems.append(f"{label!r}: {text!r} is already the word of {other!r}; give each label its own word")
        else:
            chosen[label] = token_id
    if problems:
        raise NeogenError("data.label_words: " + "; ".join(problems))
    return chosen


@dataclass
class LabelCodec:
    """Maps class labels to single completion tokens and back."""

    labels: list[str]
    completions: list[str]
    token_ids: list[int]
    separator: str
    separator_ids: list[int]
    tokenizer_fingerprint: str
    version: int = CODEC_VERSION
    _by_label: dict[str, int] = field(init=False, repr=False, compare=False)
    _by_completion: dict[str, int] = field(init=False, repr=False, compare=False)

    multi_label = False

    def __post_init__(self) -> None:
        # Kept apart: a completion may spell another label's prefix (" NUM" serves "NUM:count"), so a label
        # lookup that fell back to completions would take a stray "NUM" for "NUM:count".
        self._by_label = {lab: i for i, lab in enumerate(self.labels)}
        self._by_completion = {comp.strip(): i for i, comp in enumerate(self.completions)}

    @classmethod
    def fit(cls, labels: Iterable[str], tokenizer: Any, separator: str = SEPARATOR,
            words: Mapping[str, str] | None = None) -> LabelCodec:
        """Build the codec for a set of labels (order: sorted), assigning aliases where needed.

        `words` names the completion word of some labels ({"NUM": "number"}): a word the base model already relates
        to the class gives training a head start over an opaque alias (SmolLM2 serves TREC's "HUM" with " H").
        """
        names = sorted({str(label).strip() for label in labels})
        if len(names) < 2:
            raise NeogenError(f"a classifier needs at least two labels, found {names}")
        if any(not name for name in names):
            raise NeogenError("labels must not be empty")
        chosen = _chosen_words(names, words or {}, tokenizer)
        # Labels that are one token keep it; they are served first so no alias can take their token.
        for name in names:
            token_id = single_token(tokenizer, " " + name)
            if name not in chosen and token_id is not None and token_id not in chosen.values() \
                    and _round_trips(tokenizer, token_id):
                chosen[name] = token_id
        taken = set(chosen.values())
        pool = _word_tokens(tokenizer)
        for name in names:
            if name in chosen:
                continue
            for token_id in _alias_candidates(tokenizer, name, pool):
                if token_id not in taken and _round_trips(tokenizer, token_id):
                    chosen[name] = token_id
                    taken.add(token_id)
                    break
            else:
                raise NeogenError(f"no free single-token alias left for label {name!r}")
        token_ids = [chosen[name] for name in names]
        return cls(
            labels=names,
            completions=[tokenizer.decode([t]) for t in token_ids],
            token_ids=token_ids,
            separator=separator,
            separator_ids=tokenizer(separator, add_special_tokens=False)["input_ids"],
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        )

    @property
    def aliases(self) -> dict[str, str]:
        """Labels whose completion is not simply ' <label>', mapped to the completion used instead."""
        return {lab: comp for lab, comp in zip(self.labels, self.completions, strict=True) if comp != " " + lab}

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, label: str) -> int:
        """Class index of a label; KeyError for anything else."""
        return self._by_label[label.strip()]

    def index_completion(self, completion: str) -> int:
        """Class index of a completion text (' Physics' or an alias), as OpenAI-style files without labels carry."""
        return self._by_completion[completion.strip()]

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a tokenizer that would encode the labels or separator differently."""
        fingerprint = tokenizer_fingerprint(tokenizer)
        problems = []
        if fingerprint != self.tokenizer_fingerprint:
            problems.append(f"vocabulary fingerprint {fingerprint} != {self.tokenizer_fingerprint}")
        for comp, token_id in zip(self.completions, self.token_ids, strict=True):
            if single_token(tokenizer, comp) != token_id:
                problems.append(f"{comp!r} is not the single token {token_id}")
        if tokenizer(self.separator, add_special_tokens=False)["input_ids"] != self.separator_ids:
            problems.append("the separator tokenizes differently")
        if problems:
            raise NeogenError(
                "the label codec was built with a different tokenizer: " + "; ".join(problems)
                + ". Load the run with the base model it was trained on."
            )

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}
        return {**data, "aliases": self.aliases}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelCodec:
        """Rebuild from `to_dict` output; anything else raises NeogenError saying what is wrong."""
        if not isinstance(data, dict):
            raise NeogenError(f"a label codec is a JSON object, not a {type(data).__name__}")
        if data.get("version") != CODEC_VERSION:
            raise NeogenError(f"unsupported label codec version {data.get('version')}; expected {CODEC_VERSION} "
                              "(written by another neogen version?)")
        names = [k for k in cls.__dataclass_fields__ if not k.startswith("_")]
        missing = [k for k in names if k not in data]
        if missing:
            raise NeogenError(f"the label codec lacks {', '.join(missing)}")
        lists = ("labels", "completions", "token_ids")
        if not all(isinstance(data[k], list) for k in lists) or len({len(data[k]) for k in lists}) != 1:
            raise NeogenError("the label codec's labels, completions and token_ids must be lists of one length")
        return cls(**{k: data[k] for k in names})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, tokenizer: Any | None = None) -> LabelCodec:
        """Load a saved codec; with a tokenizer, also check that it is the one the codec was built with."""
        data = read_codec_file(path)
        try:
            codec = cls.from_dict(data)
        except (NeogenError, TypeError) as e:
            raise codec_error(path, str(e)) from e
        if tokenizer is not None:
            codec.check_tokenizer(tokenizer)
        return codec


def codec_error(path: str | Path, reason: str) -> NeogenError:
    """The error of a labels.json that cannot be read: names the file and the fix."""
    return NeogenError(f"{path} is not a label codec neogen can read: {reason} (fix: it is written by `neogen train`; "
                       "restore the run's own copy, or train the run again)")


def read_codec_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a labels.json, or the error of `codec_error`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise codec_error(path, f"invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise codec_error(path, f"it holds a JSON {type(data).__name__}, not an object")
    return data
