from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from neogen.errors import ConfigError
from neogen.recipe import Recipe, apply_overrides, load_recipe, recipe_help

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "gpt-neo-125m", "gpt-neo-1.3b", "gpt-neo-2.7b-4bit"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_validates_and_names_its_command(path: Path):
    text = path.read_text()
    assert f"neogen train recipes/{path.name}" in text.split("\n\n")[0]
    recipe = load_recipe(path, ["data.train=somewhere.csv"])
    assert recipe.output_dir.startswith("runs/")


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        Recipe.from_dict({"train": {"epochz": 1, "lr": -1, "batch_size": "big"}, "lora": {"r": 0},
                          "model": {"quantization": "3bit"}})
    message = str(err.value)
    for expected in ("train.epochz: unknown key; did you mean 'train.epochs'?", "train.batch_size: expected int",
                     "lora.r: must be >= 1", "model.quantization", "data.train: a training file is required"):
        assert expected in message
    assert len(err.value.problems) >= 5


def test_overrides_are_typed_and_round_trip(tmp_path):
    data = apply_overrides({}, ["data.train=x.csv", "train.epochs=2", "lora.target_modules=[q_proj, v_proj]",
                                "model.quantization=null", "data.shuffle=true"])
    recipe = Recipe.from_dict(data)
    assert recipe.train.epochs == 2.0 and isinstance(recipe.train.epochs, float)
    assert recipe.lora.target_modules == ["q_proj", "v_proj"] and recipe.data.shuffle is True
    recipe.save(tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert yaml.safe_load((tmp_path / "r.yaml").read_text())["train"]["epochs"] == 2.0


def test_label_words_override_is_a_mapping_and_checked():
    recipe = Recipe.from_dict(apply_overrides({}, ["data.train=x.csv", "data.label_words={NUM: number, LOC: place}",
                                                   "train.loss=labels"]))
    assert recipe.data.label_words == {"NUM": "number", "LOC": "place"} and recipe.train.loss == "labels"
    with pytest.raises(ConfigError) as err:
        Recipe.from_dict(apply_overrides({}, ["data.train=x.csv", "data.label_words={NUM: }", "train.loss=tokens"]))
    assert "data.label_words: no word given for ['NUM']" in str(err.value)
    assert "train.loss: 'tokens' is not one of vocab, labels" in str(err.value)


def test_bad_override_and_missing_file():
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe("nope.yaml")


def test_help_lists_every_key():
    text = recipe_help()
    for key in ("model.name", "lora.r", "data.text_column", "train.max_length", "output_dir"):
        assert key in text


def test_exponent_without_a_dot_is_a_number():
    assert load_recipe(None, ["train.lr=5e-3", "data.train=x.csv"]).train.lr == 0.005


def test_class_weight_takes_a_word_or_a_mapping_of_numbers():
    recipe = load_recipe(None, ["data.train=x.csv", "train.class_weight={ABBR: 4, NUM: 0.5}"])
    assert recipe.train.class_weight == {"ABBR": 4.0, "NUM": 0.5}
    assert load_recipe(None, ["data.train=x.csv", "train.class_weight=balanced"]).train.class_weight == "balanced"
    with pytest.raises(ConfigError) as e:
        load_recipe(None, ["data.train=x.csv", "train.class_weight={ABBR: lots, NUM: -1}"])
    assert "train.class_weight.ABBR: expected a number, got 'lots'" in str(e.value)
    assert "weights must be numbers > 0" in str(e.value)
    with pytest.raises(ConfigError, match="'inverse' is not none, balanced or a mapping"):
        load_recipe(None, ["data.train=x.csv", "train.class_weight=inverse"])


def test_yes_and_no_stay_words(tmp_path):
    """YAML 1.1 would read yes/no as booleans and train the labels' words as ' True' / ' False'."""
    recipe = load_recipe(None, ["data.train=x.csv", "data.label_words={neg: no, pos: yes}",
                                "train.class_weight={yes: 3, no: 1}", "data.shuffle=true"])
    assert recipe.data.label_words == {"neg": "no", "pos": "yes"} and recipe.data.shuffle is True
    assert recipe.train.class_weight == {"yes": 3.0, "no": 1.0}
    (tmp_path / "r.yaml").write_text("data:\n  train: x.csv\n  label_words: {off: on}\n  stratify: false\n")
    from_file = load_recipe(tmp_path / "r.yaml")
    assert from_file.data.label_words == {"off": "on"} and from_file.data.stratify is False
    recipe.save(tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == recipe


def test_label_separator_overrides_are_the_characters_typed(tmp_path):
    for sep in ("|", ",", ";", "/"):
        assert load_recipe(None, ["data.train=x.csv", f"data.label_separator={sep}"]).data.label_separator == sep
    # In a file YAML reads an unquoted | as an empty block: refused, with the fix, instead of ignored.
    (tmp_path / "r.yaml").write_text("data:\n  train: x.csv\n  label_separator: |\n")
    with pytest.raises(ConfigError, match=r"data\.label_separator: '' separates nothing.*quote"):
        load_recipe(tmp_path / "r.yaml")


def test_non_finite_numbers_and_unknown_optimizer_names_are_refused_up_front():
    with pytest.raises(ConfigError) as e:
        load_recipe(None, ["train.epochs=.nan", "train.lr=.inf", "train.weight_decay=-1", "train.optimizer=adamw_typo",
                           "train.scheduler=cosinus"])
    problems = "\n".join(e.value.problems)
    assert "train.epochs: must be a number > 0, got nan" in problems
    assert "train.lr: must be a number > 0, got inf" in problems
    assert "train.weight_decay: must be a number >= 0, got -1" in problems
    assert "train.optimizer: 'adamw_typo' is not one transformers knows; did you mean adamw_" in problems
    assert "train.scheduler: 'cosinus' is not one transformers knows; did you mean cosine" in problems


def test_a_recipe_file_that_is_not_a_mapping_is_refused_with_overrides_too(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- model\n- data\n")
    with pytest.raises(ConfigError, match=r"a recipe is a mapping of sections .* not a list"):
        load_recipe(path, ["train.epochs=2"])


def test_the_keys_a_resume_may_change_are_marked_on_the_recipe_fields():
    from neogen.recipe import resumable_keys

    keys = resumable_keys()
    assert {"train.epochs", "output_dir", "train.report_to", "multilabel.threshold"} <= keys
    assert not {"train.lr", "model.name", "data.train", "lora.r", "train.seed"} & keys
