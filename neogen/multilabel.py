"""Multi-label classification's label codec, for the three ways of reading a label set off one causal LM.

  powerset     every label set seen in training is one class with its own completion token; training and the
               forward pass are exactly single-label's, and a label's probability is the summed probability of the
               sets holding it. Cannot predict a set it never saw.
  independent  one forward pass; each label token's logit after the separator is its own yes/no decision
               (sigmoid, binary cross-entropy), so any subset can come out.
  yes_no       each label's token is appended after the separator and the model answers " yes" or " no"; the
               text's key/value cache is computed once and shared by all labels (`forward.suffix_logits`).

All three give per-label probabilities (N, L), computed by their tasks (neogen.tasks); thresholds
(neogen.thresholds) turn them into label sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neogen.errors import NeogenError
from neogen.labels import LabelCodec, codec_error, read_codec_file, single_token
from neogen.prompt import SEPARATOR
from neogen.read import label_key

ENCODINGS = ("powerset", "independent", "yes_no")
NO_LABEL = "(none)"  # the powerset class of the empty label set
ANSWER_CHOICES = ((" yes", " no"), (" Yes", " No"), (" Y", " N"))
MULTI_CODEC_VERSION = 1


@dataclass
class MultiLabelCodec:
    """Maps label sets to the tokens one encoding trains and reads, and back."""

    encoding: str
    labels: list[str]  # the L labels, sorted
    classes: LabelCodec  # completion tokens: of label sets (powerset) or of labels (independent, yes_no)
    combinations: list[list[str]] | None = None  # powerset: class index -> its label set
    answers: list[str] | None = None  # yes_no: [" yes", " no"]
    answer_ids: list[int] | None = None
    allow_empty: bool = False
    version: int = MULTI_CODEC_VERSION
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def fit(cls, label_sets: Iterable[Sequence[str]], tokenizer: Any, encoding: str = "independent",
            allow_empty: bool = False, separator: str = SEPARATOR,
            words: Mapping[str, str] | None = None) -> MultiLabelCodec:
        """Build the codec of an encoding from the training rows' label sets (`words`: see LabelCodec.fit)."""
        if encoding not in ENCODINGS:
            raise NeogenError(f"unknown multi-label encoding '{encoding}'; use one of {', '.join(ENCODINGS)}")
        # Stripped as LabelCodec.fit strips its names, so that label j and token j stay the same label.
        sets = [tuple(sorted({str(label).strip() for label in s})) for s in label_sets]
        labels = sorted({label for s in sets for label in s})
        if len(labels) < 2:
            raise NeogenError(f"multi-label classification needs at least two labels, found {labels}")
        if encoding == "powerset":
            if words:
                raise NeogenError("label words name single labels; the powerset encoding gives a token to each label "
                                  "set, so use independent or yes_no, or drop data.label_words")
            by_name: dict[str, tuple[str, ...]] = {}
            for s in sets:  # each class keeps the set it came from: its name is for people, not to be split back
                name = label_key(s) or NO_LABEL
                if by_name.setdefault(name, s) != s:
                    raise NeogenError(f"the label sets {list(by_name[name])} and {list(s)} would share the powerset "
                                      f"class {name!r} (a label holds ',' or is named {NO_LABEL!r}); rename that "
                                      "label, or use the independent or yes_no encoding")
            classes = LabelCodec.fit(list(by_name), tokenizer, separator)
            combinations = [list(by_name[name]) for name in classes.labels]
            return cls(encoding, labels, classes, combinations=combinations, allow_empty=allow_empty)
        classes = LabelCodec.fit(labels, tokenizer, separator, words=words)
        if encoding == "independent":
            return cls(encoding, labels, classes, allow_empty=allow_empty)
        for answers in ANSWER_CHOICES:
            ids = [single_token(tokenizer, a) for a in answers]
            if None not in ids:
                return cls(encoding, labels, classes, answers=list(answers), answer_ids=ids, allow_empty=allow_empty)
        raise NeogenError("the tokenizer has no single-token yes/no answer pair; use another encoding")

    multi_label = True

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def separator(self) -> str:
        return self.classes.separator

    @property
    def token_ids(self) -> list[int]:
        return self.classes.token_ids

    def multi_hot(self, labels: Iterable[str]) -> list[float]:
        """The (L,) 0/1 vector of a label set; an unknown label raises KeyError."""
        row = [0.0] * len(self.labels)
        for label in labels:
            row[self._index[str(label).strip()]] = 1.0
        return row

    def class_index(self, labels: Sequence[str]) -> int | None:
        """Powerset: the class of a label set, None for a set not seen in training."""
        try:
            return self.classes.index(label_key([str(label).strip() for label in labels]) or NO_LABEL)
        except KeyError:
            return None

    def membership(self) -> np.ndarray:
        """Powerset: (K, L) 0/1 matrix, row k the label set of class k."""
        matrix = np.zeros((len(self.classes), len(self.labels)), dtype=np.float32)
        for k, combination in enumerate(self.combinations or []):
            matrix[k, [self._index[label] for label in combination]] = 1.0
        return matrix

    def check_tokenizer(self, tokenizer: Any) -> None:
        self.classes.check_tokenizer(tokenizer)
        if self.answers and [single_token(tokenizer, a) for a in self.answers] != self.answer_ids:
            raise NeogenError("the label codec was built with a different tokenizer: the yes/no answers encode "
                              "differently. Load the run with the base model it was trained on.")

    def to_dict(self) -> dict[str, Any]:
        return {"task": "multi_label", "version": self.version, "encoding": self.encoding, "labels": self.labels,
                "allow_empty": self.allow_empty, "combinations": self.combinations, "answers": self.answers,
                "answer_ids": self.answer_ids, "classes": self.classes.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiLabelCodec:
        if data.get("version") != MULTI_CODEC_VERSION:
            raise NeogenError(f"unsupported multi-label codec version {data.get('version')}; "
                              f"expected {MULTI_CODEC_VERSION}")
        return cls(data["encoding"], data["labels"], LabelCodec.from_dict(data["classes"]),
                   combinations=data.get("combinations"), answers=data.get("answers"),
                   answer_ids=data.get("answer_ids"), allow_empty=data.get("allow_empty", False))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_codec(path: str | Path, tokenizer: Any | None = None) -> LabelCodec | MultiLabelCodec:
    """Load labels.json of either task; with a tokenizer, check it is the one the codec was built with."""
    data = read_codec_file(path)
    try:
        codec = MultiLabelCodec.from_dict(data) if data.get("task") == "multi_label" else LabelCodec.from_dict(data)
    except KeyError as e:
        raise codec_error(path, f"it lacks {e}") from e
    except (NeogenError, TypeError, ValueError) as e:
        raise codec_error(path, str(e)) from e
    if tokenizer is not None:
        codec.check_tokenizer(tokenizer)
    return codec
