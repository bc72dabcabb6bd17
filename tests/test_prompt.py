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
