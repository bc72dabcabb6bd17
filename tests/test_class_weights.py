import pytest
import torch
import torch.nn.functional as F
from conftest import toy_multilabel_rows, toy_rows, write_csv

from neogen.errors import ConfigError
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.read import Example, load_examples
from neogen.tasks import task_for, weighted_mean


def class_weights(examples, codec, spec):
    return task_for(codec).class_weights(examples, spec)


def single(labels: list[str]) -> list[Example]:
    return [Example(f"text {i}", lab, "toy.csv", i + 2) for i, lab in enumerate(labels)]


def test_balanced_weights_give_every_class_the_same_total(gpt2_bpe):
    examples = single(["Biology"] * 6 + ["Physics"] * 2)
    codec = LabelCodec.fit([ex.label for ex in examples], gpt2_bpe)
    weights = class_weights(examples, codec, "balanced")
    # n / (K x n_class): 8 / (2 x 6) and 8 / (2 x 2), as scikit-learn's class_weight="balanced"
    torch.testing.assert_close(weights, torch.tensor([8 / 12, 8 / 4]))
    assert float(weights[0] * 6) == pytest.approx(float(weights[1] * 2))


def test_mapping_weights_default_to_one_and_unknown_labels_are_refused(gpt2_bpe):
    examples = single(["Biology", "Chemistry", "Physics"])
    codec = LabelCodec.fit([ex.label for ex in examples], gpt2_bpe)
    torch.testing.assert_close(class_weights(examples, codec, {"Physics": 3.0}), torch.tensor([1.0, 1.0, 3.0]))
    assert class_weights(examples, codec, "none") is None
    with pytest.raises(ConfigError, match=r"\['Poetry'\] are not training labels"):
        class_weights(examples, codec, {"Poetry": 2.0})


def test_multilabel_balanced_is_negatives_over_positives(gpt2_bpe, tmp_path):
    examples, _ = load_examples(write_csv(tmp_path / "ml.csv", toy_multilabel_rows(24)), "text", "label")
    codec = MultiLabelCodec.fit([ex.labels for ex in examples], gpt2_bpe, "independent")
    weights = class_weights(examples, codec, "balanced")
    for label, w in zip(codec.labels, weights.tolist(), strict=True):
        positives = sum(label in ex.labels for ex in examples)
        assert w == pytest.approx((len(examples) - positives) / positives)
    everywhere = [Example(ex.text, ex.label, ex.source, ex.line, (*ex.labels, "zz")) for ex in examples]
    codec = MultiLabelCodec.fit([ex.labels for ex in everywhere], gpt2_bpe, "independent")
    weights = dict(zip(codec.labels, class_weights(everywhere, codec, "balanced").tolist(), strict=True))
    assert weights["zz"] == 1.0  # on every row: no negatives to balance against, and never weight 0
    powerset = MultiLabelCodec.fit([ex.labels for ex in examples], gpt2_bpe, "powerset")
    with pytest.raises(ConfigError, match="powerset"):
        class_weights(examples, powerset, "balanced")


def test_weighted_mean_is_torch_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, classes = torch.randn(7, 3), torch.tensor([0, 2, 2, 1, 0, 2, 2])
    weights = torch.tensor([0.5, 2.0, 1.5])
    ours = weighted_mean(F.cross_entropy(logits, classes, reduction="none"), classes, weights)
    torch.testing.assert_close(ours, F.cross_entropy(logits, classes, weight=weights))
    torch.testing.assert_close(weighted_mean(F.cross_entropy(logits, classes, reduction="none"), classes, None),
                               F.cross_entropy(logits, classes))


def test_trainer_loss_weighs_each_completion_by_its_class(tiny_neo):
    """The weighted completion loss is the class-weighted average of Hugging Face's masked causal-LM losses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from neogen.train import CompletionCollator, trainer_class

    model = AutoModelForCausalLM.from_pretrained(tiny_neo)
    codec = LabelCodec.fit(["Biology", "Physics"], AutoTokenizer.from_pretrained(tiny_neo))
    prompts, classes = [[464, 3290, 318, 628, 21017, 628], [1212, 628, 21017, 628], [257, 628, 21017, 628]], [1, 0, 0]
    weights = torch.tensor([0.75, 3.0])
    trainer = trainer_class()(model=model, args=TrainingArguments(output_dir="unused", report_to=[], use_cpu=True),
                               task=task_for(codec), class_weights=weights)
    batch = CompletionCollator(pad_id=50256)([{"input_ids": p, "labels": c}
                                              for p, c in zip(prompts, classes, strict=True)])
    ours = trainer.compute_loss(model, batch)

    losses, w = [], []
    for prompt, cls in zip(prompts, classes, strict=True):
        token = codec.token_ids[cls]
        ids, labels = torch.tensor([[*prompt, token]]), torch.tensor([[-100] * len(prompt) + [token]])
        losses.append(model(input_ids=ids, labels=labels).loss)
        w.append(weights[cls])
    expected = (torch.stack(losses) * torch.stack(w)).sum() / torch.stack(w).sum()
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_toy_rows_are_balanced_so_balanced_weights_are_one(gpt2_bpe, tmp_path):
    examples, _ = load_examples(write_csv(tmp_path / "toy.csv", toy_rows(3)), "text", "label")
    codec = LabelCodec.fit([ex.label for ex in examples], gpt2_bpe)
    torch.testing.assert_close(class_weights(examples, codec, "balanced"), torch.ones(4))
