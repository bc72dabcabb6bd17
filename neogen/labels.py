"""The label codec: every class is exactly one token of the base model's tokenizer, with a leading space.

A label whose completion word the user chose (`data.label_words`, e.g. NUM -> " number") gets that word. Any other
label that is one token (" Physics") is its own completion. Every other label gets a single-token alias, chosen for
all labels at once (`assign_aliases`): each label's candidates are its own words in a few casings and inflections
(" date" for "NUM:date", " Math" for "Maths", " revert" for "reverted"), scored so that a word distinctive for the
label beats a word many labels share, and solved as an assignment problem, so that no label is left a function word
because an earlier one took its best word. A label with no content word free (every word a stop word, or taken)
falls back to the earlier order: its own first token, its later words, a capital letter, a fixed pool of short word
tokens. The codec is saved with the run (a saved run keeps its completions; loading never re-assigns) and refuses to
load against a tokenizer whose vocabulary differs from the one it was built with.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neogen.errors import NeogenError
from neogen.prompt import SEPARATOR

logger = logging.getLogger(__name__)

CODEC_VERSION = 1

# NLTK's English stop-word list: function words say nothing about a class (" or" for "lost_or_stolen_phone"), so an
# alias is one only where a label has no other word left.
_STOP_WORDS_TEXT = """
a about above after again against ain all am an and any are aren as at be because been before being below between both
but by can couldn d did didn do does doesn doing don down during each few for from further had hadn has hasn have
haven having he her here hers herself him himself his how i if in into is isn it its itself just ll m ma me mightn
more most mustn my myself needn no nor not now o of off on once only or other our ours ourselves out over own re s
same shan she should shouldn so some such t than that the their theirs them themselves then there these they this
those through to too under until up ve very was wasn we were weren what when where which while who whom why will with
won wouldn y you your yours yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

# Costs of a (label, token) pair, lower is better. A word shared by n labels costs log2(n) (one of the label's own
# costs 0); another casing, an inflection, or a piece of a longer word costs a little more; a later word of the label
# a little more than an earlier one (ties keep " Sci" for "Sci/Tech").
_CASINGS = (0.0, 0.5, 0.75, 0.75)  # as the label spells it, lowercase, capitalised, uppercase (short words only)
_INFLECTION = 0.5  # "Math" for "Maths", "revert" for "reverted"
_FIRST_PIECE = 1.5  # times the share of the word it leaves out: " Math" of "Maths" 0.3, " tech" of "techmeth" 0.75
_LATER_PIECE = 2.0  # " zone" for "timezone": a later token of a word, as a word of its own
_ACRONYM = 4  # words this short are also tried in capitals (" AI" for "change_ai_name")
_POSITION = 0.1  # per word of the label before this one
_VARIANT = 3.0  # another word of a family a label already has (" charged" beside " charge")
_NO_WORD = 100.0  # left without a content word: the fallback order serves the label
_FORBIDDEN = 1e9  # not a candidate of that label
_TIE = 1e-9  # per column: equal costs go to the lower token id


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
    """Short word tokens (' word', no stop word) in vocabulary order: the last-resort alias pool, one for all."""
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = tokenizer.convert_tokens_to_string([token])
        if word.startswith(" ") and word[1:].isalpha() and len(word) > 2 and word[1:].lower() not in STOP_WORDS:
            yield token_id


def _own_tokens(tokenizer: Any, label: str) -> list[int]:
    """The fallback order's first part, the label's own tokens: its first token, its later words, other casings.

    Later words come before other casings of the first: hierarchical labels share their first word ("NUM:date",
    "NUM:money"), and " date" says more than " num".
    """
    later = [v for part in re.split(r"[\W_]+", label)[1:] if part for v in (part, part.lower(), part.capitalize())]
    ids = [tokenizer(" " + variant, add_special_tokens=False)["input_ids"]
           for variant in (label, *later, label.lower(), label.capitalize())]
    return [i[0] for i in ids if i]


def _pool(tokens: _Tokens, words: Iterator[int]) -> Iterator[int]:
    """The fallback order's last part, the same for every label: capital letters, then word tokens.

    The word tokens are one iterator shared by all labels: what an earlier label passed over is taken or unusable,
    so resuming gives the same aliases as restarting.
    """
    for letter in string.ascii_uppercase:
        token_id = tokens.single(" " + letter)
        if token_id is not None:
            yield token_id
    for token_id in words:  # not `yield from`: closing this generator must not close the shared pool
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


def label_words(label: str) -> list[str]:
    """The words of a label: split at anything but a letter or digit, and where a capital follows a small letter."""
    return [w for w in re.split(r"[\W_]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)) if w]


def word_family(word: str) -> str:
    """A crude stem of the lowercased word ('charged', 'charges', 'charge' -> 'charg'; 'topping' -> 'top').

    Words of one family count as one when measuring how distinctive a word is, and a label pays extra for a token
    of a family another label has (" revert" beside " reverted"): the base model reads them much alike.
    """
    w = word.strip().lower()
    for suffix in ("ing", "ed", "es", "s", "e"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not (suffix == "s" and w.endswith(("ss", "us", "is"))):
            w = w[: -len(suffix)]
            break
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # "topping" -> "top", as the token " topp" of "topping"
    return w


def _inflections(word: str) -> list[str]:
    """Lemma-like forms of a word, its casing kept: 'Maths' -> 'Math', 'reverted' -> 'revert', 'topping' -> 'top'."""
    low = word.lower()
    forms = []
    if low.endswith("ies"):
        forms.append(word[:-3] + "y")
    if low.endswith("es"):
        forms.append(word[:-2])
    if low.endswith("s") and not low.endswith(("ss", "us", "is")):
        forms.append(word[:-1])
    for suffix in ("ing", "ed"):
        if low.endswith(suffix):
            base = word[: -len(suffix)]
            forms += [base, base + "e"]
            if len(base) > 1 and base[-1] == base[-2]:
                forms.append(base[:-1])
    return [f for f in forms if len(f) >= 3 and f.isalpha()]


def _is_content(word: str) -> bool:
    """A word that can carry a class's meaning: letters only, at least two, not a stop word."""
    return word.isalpha() and len(word) > 1 and word.lower() not in STOP_WORDS


class _Tokens:
    """Cached look-ups in one tokenizer: an alias search asks the same few questions many times."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._words: dict[str, int | None] = {}
        self._singles: dict[str, int | None] = {}
        self._texts: dict[int, str] = {}

    def word(self, text: str) -> int | None:
        """The completion token ' text' (one token that decodes back to itself), else None."""
        if text not in self._words:
            self._words[text] = word_token(self.tokenizer, text)
        return self._words[text]

    def single(self, text: str) -> int | None:
        """The token id if `text` is exactly one token, else None (`single_token`)."""
        if text not in self._singles:
            self._singles[text] = single_token(self.tokenizer, text)
        return self._singles[text]

    def text(self, token_id: int) -> str:
        """The token's text, without its leading space."""
        if token_id not in self._texts:
            self._texts[token_id] = self.tokenizer.decode([token_id]).strip()
        return self._texts[token_id]

    def pieces(self, word: str) -> list[str]:
        """The texts of the tokens ' word' is made of ('techmeth' -> ['tech', 'meth'])."""
        return [self.text(t) for t in self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]]


def _candidates(label: str, shared: Counter[str], tokens: _Tokens) -> dict[int, float]:
    """The content-word tokens a label can take, with their costs (the constants above); `shared`: labels per word."""
    costs: dict[int, float] = {}
    for position, word in enumerate(label_words(label)):
        base = math.log2(max(shared[word_family(word)], 1)) + _POSITION * position
        offers: list[tuple[str, float]] = []
        for form, extra in [(word, 0.0)] + [(f, _INFLECTION) for f in _inflections(word)]:
            casings = (form, form.lower(), form.capitalize(), form.upper() if len(form) <= _ACRONYM else form)
            offers += [(v, extra + c) for v, c in zip(casings, _CASINGS, strict=True)]
        pieces = tokens.pieces(word)
        if len(pieces) > 1:
            offers.append((pieces[0], _FIRST_PIECE * (1 - len(pieces[0]) / len(word))))
            offers += [(piece, _LATER_PIECE) for piece in pieces[1:] if len(piece) >= 3]
        for text, extra in offers:
            token_id = tokens.word(text) if _is_content(text) else None
            if token_id is not None and base + extra < costs.get(token_id, math.inf):
                costs[token_id] = base + extra
    return costs


def _solve(rows: list[dict[int, float]], tokens: _Tokens) -> list[int | None]:
    """The cheapest distinct token of each row, no two case variants of one word; None where a row has none left.

    One assignment problem, rows x (candidate tokens + a 'no word' column per row). Where the solution gives two rows
    case variants of one word (" cash", " Cash"), that word is forbidden to all but the cheaper row (the earlier on a
    tie); where it gives them two words of one family (" charge", " charged"), the dearer row pays `_VARIANT` for that
    family; then it is solved again. Each round forbids or charges at least one more pair, so this ends.
    """
    columns = sorted({t for row in rows for t in row})
    if not columns:
        return [None] * len(rows)
    from scipy.optimize import linear_sum_assignment  # imported here: only an alias search needs it

    index = {t: j for j, t in enumerate(columns)}
    words = np.array([tokens.text(t).lower() for t in columns])
    families = np.array([word_family(w) for w in words])
    cost = np.full((len(rows), len(columns) + len(rows)), _NO_WORD)
    cost[:, : len(columns)] = _FORBIDDEN
    for i, row in enumerate(rows):
        for token_id, c in row.items():
            cost[i, index[token_id]] = c + _TIE * index[token_id]
    charged: set[tuple[int, str]] = set()
    while True:
        _, picked = linear_sum_assignment(cost)
        picks = {i: int(j) for i, j in enumerate(picked) if j < len(columns) and cost[i, j] < _NO_WORD}
        changed = False
        for i in _dearer(picks, words, cost):
            cost[i, : len(columns)][words == words[picks[i]]] = _FORBIDDEN
            changed = True
        for i in _dearer(picks, families, cost):
            if (i, families[picks[i]]) not in charged:
                charged.add((i, families[picks[i]]))
                cost[i, : len(columns)][families == families[picks[i]]] += _VARIANT
                changed = True
        if not changed:
            return [columns[picks[i]] if i in picks else None for i in range(len(rows))]


def _dearer(picks: dict[int, int], keys: np.ndarray, cost: np.ndarray) -> list[int]:
    """The rows whose pick shares its key with a cheaper row's pick (the earlier row on a tie)."""
    groups: dict[str, list[int]] = {}
    for i, j in picks.items():
        groups.setdefault(keys[j], []).append(i)
    return [i for group in groups.values() for i in sorted(group, key=lambda i: (cost[i, picks[i]], i))[1:]]


def assign_aliases(names: list[str], all_names: list[str], taken: Iterable[int], tokenizer: Any) -> dict[str, int]:
    """A distinct single-token alias for each of `names`, none in `taken` nor a case variant of a taken token.

    All labels are served at once (`_solve`) from their own content words; `all_names`, every label of the codec,
    says how many labels share each word. A label left without one takes the first free token of the fallback order
    (`_fallback`), labels in order: a stop word, letter or case variant of its own comes only then.
    """
    tokens = _Tokens(tokenizer)
    taken = set(taken)
    taken_words = {tokens.text(t).lower() for t in taken}
    taken_families = {word_family(w) for w in taken_words}
    shared = Counter(f for name in all_names for f in {word_family(w) for w in label_words(name)})
    rows = []
    for name in names:
        row = {t: c for t, c in _candidates(name, shared, tokens).items() if tokens.text(t).lower() not in taken_words}
        rows.append({t: c + _VARIANT * (word_family(tokens.text(t)) in taken_families) for t, c in row.items()})
    chosen = {name: t for name, t in zip(names, _solve(rows, tokens), strict=True) if t is not None}
    taken |= set(chosen.values())
    taken_words |= {tokens.text(t).lower() for t in chosen.values()}
    words = _word_tokens(tokenizer)
    for name in names:
        if name not in chosen:
            chosen[name] = _fallback(name, taken, taken_words, words, tokens)
            taken.add(chosen[name])
            taken_words.add(tokens.text(chosen[name]).lower())
    logger.debug("aliases: %s", {name: tokens.text(t) for name, t in chosen.items()})
    return chosen


def _fallback(name: str, taken: set[int], taken_words: set[str], words: Iterator[int], tokens: _Tokens) -> int:
    """The first free token of the fallback order, for a label with no content word left.

    Its own tokens first (a case variant of a taken token, " Change" beside " change", after the others), then the
    pool. `taken_words`: the lowercased texts of `taken`.
    """
    own = [t for t in dict.fromkeys(_own_tokens(tokens.tokenizer, name))
           if t not in taken and _round_trips(tokens.tokenizer, t)]
    own.sort(key=lambda t: tokens.text(t).lower() in taken_words)  # stable: the order is kept within each part
    for token_id in itertools.chain(own, _pool(tokens, words)):
        if token_id not in taken and _round_trips(tokens.tokenizer, token_id):
            return token_id
    raise NeogenError(f"no free single-token alias left for label {name!r}")


def weak_alias(completion: str, others: Iterable[str]) -> str | None:
    """Why a completion says little about its class, or None: the prepare report flags these.

    A single letter, a number, a stop word, or a case variant of another label's completion (`others`): " Cash"
    beside " cash", which the base model reads alike.
    """
    word = completion.strip()
    if len(word) == 1 and word.isalpha():
        return "single letter"
    if any(ch.isdigit() for ch in word):
        return "number"
    if word.lower() in STOP_WORDS:
        return "stop word"
    for other in others:
        if other.strip() != word and other.strip().lower() == word.lower():
            return f"case variant of another label's {other!r}"
    return None


def alias_lines(aliases: Mapping[str, str], completions: Mapping[str, str]) -> list[str]:
    """The prepare report's alias table: a line per alias, weak ones flagged, then how to give those a word."""
    by_word: dict[str, list[str]] = {}
    for completion in completions.values():
        by_word.setdefault(completion.strip().lower(), []).append(completion)
    lines, weak = [], 0
    for label, alias in aliases.items():
        others = [c for c in by_word.get(alias.strip().lower(), []) if c != alias]
        reason = weak_alias(alias, others)
        weak += reason is not None
        lines.append(f"  {label!r} -> {alias!r}" + (f"  (weak: {reason})" if reason else ""))
    if weak:
        lines.append(f"{weak} weak alias(es) carry little meaning for the base model: where the label has a word for "
                     "its class, name it with --label-word LABEL=WORD (recipe: data.label_words)")
    return lines


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
        to the class gives training a head start over a code or a piece of one (SmolLM2 serves "HUM" with " hum").
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
        rest = [name for name in names if name not in chosen]
        chosen |= assign_aliases(rest, names, chosen.values(), tokenizer)
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
