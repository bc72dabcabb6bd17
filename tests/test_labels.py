import importlib
import json
import re

import pytest
from conftest import ROOT, SHARED_DATA, SHARED_DATA_FIX, gpt2_files, require

from neogen.errors import NeogenError
from neogen.labels import STOP_WORDS, LabelCodec, alias_lines, weak_alias, word_family
from neogen.prepare import format_report

TREC = SHARED_DATA / "trec" / "train_5500.label"
CLINC = SHARED_DATA / "clinc150" / "data_full.json"
# The 77 intents of the set issue 26 measured (Banking77): the greedy order gave several of them " or", " by", " F".
_BANKING77 = """activate_my_card age_limit apple_pay_or_google_pay atm_support automatic_top_up
balance_not_updated_after_bank_transfer balance_not_updated_after_cheque_or_cash_deposit beneficiary_not_allowed
cancel_transfer card_about_to_expire card_acceptance card_arrival card_delivery_estimate card_linking card_not_working
card_payment_fee_charged card_payment_not_recognised card_payment_wrong_exchange_rate card_swallowed
cash_withdrawal_charge cash_withdrawal_not_recognised change_pin compromised_card contactless_not_working
country_support declined_card_payment declined_cash_withdrawal declined_transfer direct_debit_payment_not_recognised
disposable_card_limits edit_personal_details exchange_charge exchange_rate exchange_via_app extra_charge_on_statement
failed_transfer fiat_currency_support get_disposable_virtual_card get_physical_card getting_spare_card
getting_virtual_card lost_or_stolen_card lost_or_stolen_phone order_physical_card passcode_forgotten
pending_card_payment pending_cash_withdrawal pending_top_up pending_transfer pin_blocked receiving_money
Refund_not_showing_up request_refund reverted_card_payment? supported_cards_and_currencies terminate_account
top_up_by_bank_transfer_charge top_up_by_card_charge top_up_by_cash_or_cheque top_up_failed top_up_limits
top_up_reverted topping_up_by_card transaction_charged_twice transfer_fee_charged transfer_into_account
transfer_not_received_by_recipient transfer_timing unable_to_verify_identity verify_my_identity verify_source_of_funds
verify_top_up virtual_card_not_working visa_or_mastercard why_verify_identity wrong_amount_of_cash_received
wrong_exchange_rate_for_cash_withdrawal"""
BANKING77 = _BANKING77.split()


def trec50_labels() -> list[str]:
    """TREC's 50 fine labels (`COARSE:fine`, the first field of each line)."""
    require(TREC.exists(), f"{TREC} (TREC, the benchmarks' data)", SHARED_DATA_FIX)
    return sorted({line.split(maxsplit=1)[0] for line in TREC.read_text(encoding="latin-1").splitlines()
                   if line.strip()})


def clinc150_labels() -> list[str]:
    """CLINC150's 150 in-scope intents (the `train` pairs' second field)."""
    require(CLINC.exists(), f"{CLINC} (CLINC150)", SHARED_DATA_FIX)
    return sorted({intent for _, intent in json.loads(CLINC.read_text(encoding="utf-8"))["train"]})


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


def test_hierarchical_labels_take_their_distinctive_words(gpt2_bpe):
    """TREC's fine classes share their first word: the second one names the class; a stop word only as a last resort.

    The greedy order gave "NUM:code" and "LOC:city" the shared coarse codes " NUM" and " LOC" although their own
    words were free: the defect of issue 26 (a word every label of a family shares says nothing of this one).
    """
    codec = LabelCodec.fit(["NUM:code", "NUM:date", "NUM:money", "LOC:city", "LOC:country", "not_spam", "spam"],
                           gpt2_bpe)
    assert codec.aliases == {"NUM:code": " code", "NUM:date": " date", "NUM:money": " money", "LOC:city": " city",
                             "LOC:country": " country", "not_spam": " not"}  # " spam" is the label "spam"'s


def test_a_label_lookup_never_falls_back_to_another_labels_completion(gpt2_bpe):
    codec = LabelCodec.fit(["NUM:other", "NUM:date", "LOC:city"], gpt2_bpe)
    assert codec.aliases["NUM:other"] == " NUM"  # " other" is a stop word
    with pytest.raises(KeyError):
        codec.index("NUM")  # a coarse label is not one of these fine ones, whatever the completions spell
    assert codec.index("NUM:other") == codec.labels.index("NUM:other")
    assert codec.index_completion(" NUM") == codec.index("NUM:other")  # OpenAI-style rows name the completion


def free_content_words(label: str, codec: LabelCodec, tokenizer) -> list[str]:
    """The label's content words (letters, two or more, no stop word) that have a single-token casing no other
    label's completion has in any casing: what the label could have taken instead of a weak alias."""
    others = {c.strip().lower() for lab, c in zip(codec.labels, codec.completions, strict=True) if lab != label}
    free = []
    for word in re.split(r"[\W_]+", label):
        content = word.isalpha() and len(word) > 1 and word.lower() not in STOP_WORDS and word.lower() not in others
        if content and any(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1
                           for w in (word, word.lower(), word.capitalize())):
            free.append(word)
    return free


def check_real_label_set(labels: list[str], tokenizer) -> LabelCodec:
    """What every real label set must get: distinct single tokens, the same from any order, and never a stop word
    or a single letter where the label has a content word free."""
    codec = LabelCodec.fit(labels, tokenizer)
    assert len(codec) == len(labels) and len(set(codec.token_ids)) == len(labels)
    for completion, token_id in zip(codec.completions, codec.token_ids, strict=True):
        assert tokenizer(completion, add_special_tokens=False)["input_ids"] == [token_id]
    assert LabelCodec.fit(reversed(labels), tokenizer) == codec == LabelCodec.fit(labels, tokenizer)
    for label, alias in codec.aliases.items():
        word = alias.strip()
        if word.lower() in STOP_WORDS or len(word) == 1:
            assert not free_content_words(label, codec, tokenizer), (label, alias)
    lower = [c.strip().lower() for c in codec.completions]
    assert len(set(lower)) >= len(lower) - len(labels) // 20  # case variants of one word: a few, where nothing is left
    return codec


def test_trec50_fine_labels_get_their_fine_words(gpt2_bpe):
    codec = check_real_label_set(trec50_labels(), gpt2_bpe)
    got = dict(zip(codec.labels, codec.completions, strict=True))
    assert {got[k] for k in ("NUM:code", "NUM:date", "LOC:city", "ENTY:animal")} == {" code", " date", " city",
                                                                                     " animal"}
    assert got["NUM:other"] == " NUM" and got["LOC:other"] == " LOC"  # " other" is a stop word, the code is not
    assert " other" not in got.values()


def test_clinc150_intents_get_content_words(gpt2_bpe):
    codec = check_real_label_set(clinc150_labels(), gpt2_bpe)
    got = dict(zip(codec.labels, codec.completions, strict=True))
    assert [got[k] for k in ("are_you_a_bot", "do_you_have_pets", "how_busy", "who_do_you_work_for")] == \
        [" bot", " pets", " busy", " work"]
    assert got["balance"] == " balance" and got["bill_balance"] == " bill"  # a one-token label keeps its token
    assert sum(weak_alias(c, got.values()) is not None for c in codec.aliases.values()) <= 10


def test_the_intents_of_issue_26_get_content_words(gpt2_bpe):
    """The aliases the greedy order gave (" or", " not", " by", " Failed", " Cash") are gone."""
    codec = check_real_label_set(BANKING77, gpt2_bpe)
    got = dict(zip(codec.labels, codec.completions, strict=True))
    assert got["lost_or_stolen_phone"] == " phone"
    assert got["balance_not_updated_after_cheque_or_cash_deposit"] == " deposit"
    assert got["declined_cash_withdrawal"] == " declined"
    for label in ("top_up_by_cash_or_cheque", "top_up_by_card_charge", "top_up_failed", "top_up_reverted",
                  "topping_up_by_card", "card_not_working", "transfer_into_account"):
        assert weak_alias(got[label], [c for lab, c in got.items() if lab != label]) is None, (label, got[label])


def test_a_label_made_of_other_labels_keeps_the_fallback_order(gpt2_bpe):
    """Powerset classes ("anger,fear") have no word of their own: they take the fallback order, as before (the
    golden powerset run pins these completions)."""
    codec = LabelCodec.fit(["anger", "anger,fear", "anger,joy", "fear", "fear,joy", "joy"], gpt2_bpe)
    assert codec.completions == [" anger", " Fear", " Joy", " fear", " A", " joy"]


def test_a_saved_codec_is_never_reassigned(tmp_path, gpt2_bpe):
    """A run trained with other aliases (the greedy order's " or") keeps them: loading reads, never re-assigns."""
    codec = LabelCodec.fit(["lost_or_stolen_card", "lost_or_stolen_phone"], gpt2_bpe)
    data = codec.to_dict()
    data["completions"][1], data["token_ids"][1] = " or", gpt2_bpe(" or", add_special_tokens=False)["input_ids"][0]
    (tmp_path / "labels.json").write_text(json.dumps(data))
    loaded = LabelCodec.load(tmp_path / "labels.json", gpt2_bpe)
    assert loaded.completions[1] == " or" and loaded.index_completion(" or") == 1


def test_label_words_still_override_the_assignment(gpt2_bpe):
    codec = LabelCodec.fit(["lost_or_stolen_card", "lost_or_stolen_phone", "card_arrival"], gpt2_bpe,
                           words={"card_arrival": "card"})
    got = dict(zip(codec.labels, codec.completions, strict=True))
    assert got["card_arrival"] == " card"
    assert got["lost_or_stolen_card"] not in (" card", " Card") and got["lost_or_stolen_phone"] == " phone"


def test_word_families_and_weak_aliases():
    assert word_family("charged") == word_family("charges") == word_family(" Charge") == "charg"
    assert word_family("topping") == word_family("top") == word_family("topp") == "top"
    assert word_family("status") == "status"
    assert weak_alias(" or", [" phone"]) == "stop word"
    assert weak_alias(" F", []) == "single letter"
    assert weak_alias(" 401", []) == "number"
    assert weak_alias(" Cash", [" cash", " phone"]) == "case variant of another label's ' cash'"
    assert weak_alias(" phone", [" card", " phones"]) is None  # another word of its family: not weak


def test_the_report_flags_weak_aliases(gpt2_bpe):
    codec = LabelCodec.fit(["NUM:code", "NUM:date", "not_spam", "spam"], gpt2_bpe)
    completions = dict(zip(codec.labels, codec.completions, strict=True))
    lines = alias_lines(codec.aliases, completions)
    assert "  'NUM:code' -> ' code'" in lines
    assert "  'not_spam' -> ' not'  (weak: stop word)" in lines
    assert "--label-word LABEL=WORD" in lines[-1]
    report = {"columns": None, "cleaning": None, "rows": {"train": 3}, "classes": {"a": 1, "b": 2},
              "imbalance_ratio": 2.0, "label_sets": None, "texts_with_separator": 0, "test_texts_also_in_train": 0,
              "prompt_tokens": {"p50": 1, "p90": 1, "p95": 1, "p99": 1, "max": 1, "over_max_length": 0,
                                "max_length": 8},
              "aliases": codec.aliases, "completions": completions}
    text = format_report(report)
    assert "'not_spam' -> ' not'  (weak: stop word)" in text and "--label-word" in text


def test_the_alias_table_in_the_docs_is_current(gpt2_bpe, monkeypatch):
    """docs/aliases.md's GPT-2 BPE column is what the codec gives today (its SmolLM2 column needs the GGUF file)."""
    monkeypatch.syspath_prepend(str(ROOT))
    cell = importlib.import_module("bench.aliases").cell
    rows = {line.split(" | ")[0][2:].strip("`"): line.split(" | ")[2].removesuffix(" |")
            for line in (ROOT / "docs" / "aliases.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")}
    for labels in (clinc150_labels(), trec50_labels()):
        codec = LabelCodec.fit(labels, gpt2_bpe)
        completions = dict(zip(codec.labels, codec.completions, strict=True))
        stale = [label for label in labels if rows.get(label) != cell(label, completions)]
        assert not stale, f"docs/aliases.md is stale for {stale[:5]}: python -m bench.aliases > docs/aliases.md"
