import json

import pytest
from conftest import gpt2_files

from neogen.errors import NeogenError
from neogen.labels import LabelCodec


def test_single_token_labels_keep_their_token(gpt2_bpe):
    codec = LabelCodec.fit(["Physics", "Biology", "Chemistry", "Biology"], gpt2_bpe)
    assert codec.labels == ["Biology", "Chemistry", "Physics"]
    assert codec.completions == [" Biology", " Chemistry", " Physics"]
    assert codec.token_ids == [gpt2_bpe(c, add_special_tokens=False)["input_ids"][0] for c in codec.completions]
    assert codec.aliases == {}
    assert codec.index("Physics") == 2 and codec.index(" Physics") == 2


def test_student_question_subjects_on_gpt_neo(gpt2_bpe):
    # " Maths" is two GPT-2 tokens (" Math", "s"): it is served by its first token.
    codec = LabelCodec.fit(["Biology", "Chemistry", "Maths", "Physics"], gpt2_bpe)
    assert codec.aliases == {"Maths": " Math"}
    assert codec.token_ids[2] == 16320
    assert codec.index("Maths") == codec.index_completion(" Math") == 2


def test_multi_token_label_gets_deterministic_single_token_alias(gpt2_bpe):
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    assert len(gpt2_bpe(" Sci/Tech", add_special_tokens=False)["input_ids"]) > 1
    codec = LabelCodec.fit(labels, gpt2_bpe)
    assert set(codec.aliases) == {"Sci/Tech"}
    alias = codec.aliases["Sci/Tech"]
    assert alias == " Sci"  # the label's own first token
    assert len(gpt2_bpe(alias, add_special_tokens=False)["input_ids"]) == 1
    assert len(set(codec.token_ids)) == 4
    assert LabelCodec.fit(list(reversed(labels)), gpt2_bpe) == codec
    assert codec.index("Sci/Tech") == codec.index_completion(" Sci")


def test_labels_sharing_a_first_token_get_distinct_aliases(gpt2_bpe):
    labels = ["Sci/Tech", "Sci-Fi", "Science"]
    codec = LabelCodec.fit(labels, gpt2_bpe)
    assert len(set(codec.token_ids)) == 3
    assert " Science" in codec.completions  # a one-token label is never displaced by an alias
    for completion, token_id in zip(codec.completions, codec.token_ids, strict=True):
        assert gpt2_bpe(completion, add_special_tokens=False)["input_ids"] == [token_id]
        assert completion.startswith(" ")


def test_many_labels_all_get_distinct_tokens(gpt2_bpe):
    labels = [f"class_{i:03d}" for i in range(120)]
    codec = LabelCodec.fit(labels, gpt2_bpe)
    assert len(set(codec.token_ids)) == 120
    assert len(codec.aliases) == 120


def test_a_thousand_labels_get_distinct_single_tokens_the_same_way_every_time(gpt2_bpe):
    # Hundreds of labels are on the roadmap: none of these is one token, so all go through the alias pool.
    labels = [f"L{i:04d}" for i in range(1, 1001)]
    codec = LabelCodec.fit(reversed(labels), gpt2_bpe)
    assert codec.labels == labels  # sorted, whatever order they came in
    assert len(set(codec.token_ids)) == 1000
    for token_id, completion in zip(codec.token_ids, codec.completions, strict=True):
        assert gpt2_bpe(completion, add_special_tokens=False)["input_ids"] == [token_id]
    assert LabelCodec.fit(labels, gpt2_bpe) == codec


def test_codec_round_trips_through_json(tmp_path, gpt2_bpe):
    codec = LabelCodec.fit(["World", "Sports", "Business", "Sci/Tech"], gpt2_bpe)
    codec.save(tmp_path / "labels.json")
    data = json.loads((tmp_path / "labels.json").read_text())
    assert data["aliases"] == {"Sci/Tech": " Sci"}
    assert LabelCodec.load(tmp_path / "labels.json", gpt2_bpe) == codec


def test_codec_refuses_a_different_tokenizer(tmp_path, gpt2_bpe):
    from transformers import GPT2Tokenizer

    codec = LabelCodec.fit(["Biology", "Physics"], gpt2_bpe)
    codec.save(tmp_path / "labels.json")
    vocab = dict(gpt2_bpe.get_vocab())
    # Same merges, but two tokens swap ids: the labels would silently mean something else.
    a, b = codec.token_ids
    inverse = {v: k for k, v in vocab.items()}
    vocab[inverse[a]], vocab[inverse[b]] = b, a
    other = GPT2Tokenizer(vocab=vocab, merges=gpt2_files()[1])
    with pytest.raises(NeogenError, match="different tokenizer"):
        LabelCodec.load(tmp_path / "labels.json", other)


def test_codec_needs_two_labels(gpt2_bpe):
    with pytest.raises(NeogenError, match="at least two"):
        LabelCodec.fit(["only"], gpt2_bpe)


def test_label_words_become_the_completions(gpt2_bpe):
    labels = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    words = {"HUM": "person", "LOC": "place", "NUM": " number "}  # surrounding spaces are not part of the word
    codec = LabelCodec.fit(labels, gpt2_bpe, words=words)
    assert [codec.completions[codec.index(lab)] for lab in words] == [" person", " place", " number"]
    assert codec.index_completion("number") == codec.index("NUM") == 5  # an OpenAI row names the completion
    assert LabelCodec.from_dict(json.loads(json.dumps(codec.to_dict()))) == codec
    assert codec.aliases["NUM"] == " number"


def test_a_label_word_takes_precedence_over_another_labels_own_token(gpt2_bpe):
    codec = LabelCodec.fit(["Biology", "Physics"], gpt2_bpe, words={"Biology": "Physics"})
    assert codec.completions[0] == " Physics"
    assert codec.completions[1] != " Physics" and len(set(codec.token_ids)) == 2


def test_bad_label_words_are_all_reported(gpt2_bpe):
    words = {"NUM": "numerical quantity", "LOC": "number", "HUM": "number", "Person": "person"}
    with pytest.raises(NeogenError) as err:
        LabelCodec.fit(["HUM", "LOC", "NUM"], gpt2_bpe, words=words)
    message = str(err.value)
    assert "'NUM': ' numerical quantity' is 2 tokens" in message
    assert "'HUM': ' number' is already the word of 'LOC'" in message
    assert "'Person' is not a training label" in message


def test_hierarchical_labels_take_their_later_words(gpt2_bpe):
    """TREC's fine classes share their first word: the second one names the class better than a letter would."""
    codec = LabelCodec.fit(["NUM:code", "NUM:date", "NUM:money", "LOC:city", "LOC:country", "not_spam", "spam"],
                           gpt2_bpe)
    assert codec.aliases == {"NUM:code": " NUM", "NUM:date": " date", "NUM:money": " money", "LOC:city": " LOC",
                             "LOC:country": " country", "not_spam": " not"}


def test_a_label_lookup_never_falls_back_to_another_labels_completion(gpt2_bpe):
    codec = LabelCodec.fit(["NUM:code", "NUM:date", "LOC:city"], gpt2_bpe)
    assert codec.aliases["NUM:code"] == " NUM"
    with pytest.raises(KeyError):
        codec.index("NUM")  # a coarse label is not one of these fine ones, whatever the completions spell
    assert codec.index("NUM:code") == codec.labels.index("NUM:code")
    assert codec.index_completion(" NUM") == codec.index("NUM:code")  # OpenAI-style rows name the completion
