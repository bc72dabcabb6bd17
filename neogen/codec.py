"""The label codec of a data set: fitted on the training rows, checked against the held-out ones.

Shared by `neogen prepare` and training, so that prepare refuses (naming the label, split and fix) exactly what
training would refuse, without importing the training code.
"""

from __future__ import annotations

from typing import Any

from neogen.errors import DataError
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.prepare import prepared_words
from neogen.read import Example
from neogen.recipe import Recipe

Codec = LabelCodec | MultiLabelCodec


def fit_codec(examples: list[Example], tokenizer: Any, recipe: Recipe) -> Codec:
    """The label codec of the training rows: single-label, or multi-label in the recipe's encoding."""
    if examples and examples[0].multi_label:
        return MultiLabelCodec.fit([ex.labels for ex in examples], tokenizer, recipe.multilabel.encoding,
                                   allow_empty=recipe.data.allow_empty, words=recipe.data.label_words)
    labels = sorted({ex.label for ex in examples})
    if len(labels) == 1:  # e.g. a file sorted by label, split unshuffled: say where, not just "two labels needed"
        raise DataError(examples[0].source, None, f"the training rows hold one label only ({labels[0]!r}); a "
                        "classifier needs two or more", "shuffle or stratify the split (data.shuffle=true or "
                        "data.stratify=true; --shuffle / --stratify for prepare), or add rows of other labels")
    words = {**prepared_words(examples, tokenizer), **recipe.data.label_words}
    return LabelCodec.fit(labels, tokenizer, words=words)


def check_labels(splits: dict[str, list[Example]], codec: Codec) -> None:
    """A held-out label never seen in training cannot be predicted: name its file and line."""
    known = set(codec.labels)
    for name in ("valid", "test"):
        for ex in splits[name]:
            unknown = sorted(set(ex.labels) - known) if ex.multi_label else [] if ex.label in known else [ex.label]
            if unknown:
                raise DataError(ex.source, ex.line, f"label {unknown[0]!r} in the {name} split is not in the "
                                f"training labels {codec.labels}", "add training rows with this label, split "
                                "with data.stratify=true (--stratify for prepare), or fix the label")
