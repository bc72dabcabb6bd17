import json

import pytest
import torch
from conftest import toy_rows, write_csv

from neogen.errors import DataError
from neogen.labels import LabelCodec
from neogen.recipe import Recipe
from neogen.train import CompletionCollator, _trainer_class, train


def test_loss_is_the_causal_lm_loss_of_the_completion_token_only(tiny_neo):
    """Our last-position loss equals Hugging Face's causal-LM loss with every prompt token masked (-100)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_neo)
    codec = LabelCodec.fit(["Biology", "Physics"], AutoTokenizer.from_pretrained(tiny_neo))
    prompts = [[464, 3290, 318, 257, 2685, 628, 21017, 628], [1212, 628, 21017, 628]]
    label_token_ids = codec.token_ids
    classes = [1, 0]
    trainer = _trainer_class()(model=model, args=TrainingArguments(output_dir="unused", report_to=[], use_cpu=True),
                               codec=codec)
    features = [{"input_ids": p, "labels": c} for p, c in zip(prompts, classes, strict=True)]
    batch = CompletionCollator(pad_id=50256)(features)
    ours = trainer.compute_loss(model, batch)

    losses = []
    for prompt, cls in zip(prompts, classes, strict=True):
        ids = torch.tensor([[*prompt, label_token_ids[cls]]])
        labels = torch.tensor([[-100] * len(prompt) + [label_token_ids[cls]]])
        losses.append(model(input_ids=ids, labels=labels).loss)
    torch.testing.assert_close(ours, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def tiny_recipe(tiny_neo, tmp_path, **data) -> Recipe:
    csv = write_csv(tmp_path / "toy.csv", toy_rows(12))
    return Recipe.from_dict({
        "model": {"name": tiny_neo},
        "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(csv), "valid_ratio": 0.25, "test_ratio": 0.25, "stratify": True, **data},
        "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3, "max_length": 32, "precision": "fp32",
                  "logging_steps": 2},
        "output_dir": str(tmp_path / "run"),
    })


def test_train_writes_a_complete_run_dir(tiny_neo, tmp_path):
    run = train(tiny_recipe(tiny_neo, tmp_path))
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "last/adapter_model.safetensors",
                 "labels.json", "recipe.yaml", "metrics.jsonl", "results.json", "data_report.json",
                 "eval/test/metrics.json", "eval/test/confusion_matrix.png", "eval/train/roc_curves.png"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["n"] == 24 and results["test"]["n"] == 12 and results["valid"]["n"] == 12
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and any("eval_log_loss" in r for r in log)
    assert results["best_checkpoint"] is not None


def test_unknown_test_label_names_its_line(tiny_neo, tmp_path):
    test_csv = write_csv(tmp_path / "test.csv", [("what is a lens", "Physics"), ("what is a poem", "Poetry")])
    recipe = tiny_recipe(tiny_neo, tmp_path, test=str(test_csv), test_ratio=0.0)
    with pytest.raises(DataError, match=r"test.csv:3: label 'Poetry'"):
        train(recipe)
