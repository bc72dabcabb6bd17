"""The run folder's owner: training writes only into a folder it created or marked, and one training at a time."""

import json
import os

import pytest
from conftest import write_csv
from test_folders import hold_lock
from test_train import tiny_recipe

from neogen.errors import LockedError, NeogenError, OutputError
from neogen.recipe import Recipe
from neogen.run import RUN_MARKER, Run
from neogen.train import train


def user_folder(path):
    """A folder of a user's own files, named as a run's files are."""
    for name in ("checkpoints/checkpoint-5", "last", "eval"):
        (path / name).mkdir(parents=True)
    (path / "eval" / "notes.md").write_text("my notes")
    (path / "last" / "data.csv").write_text("a,b\n")
    (path / "results.json").write_text('{"mine": true}')
    return {p.relative_to(path): p.read_bytes() if p.is_file() else None for p in path.rglob("*")}


def test_train_refuses_a_folder_it_did_not_create_and_touches_nothing(tiny_neo, tmp_path):
    recipe = tiny_recipe(tiny_neo, tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    before = user_folder(folder)
    with pytest.raises(OutputError, match=r"run already holds files that neogen did not write .*output_dir"):
        train(recipe)
    assert {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")} == before


def test_train_writes_its_marker_first_and_a_refused_run_leaves_an_earlier_one_whole(tiny_neo, tmp_path):
    recipe = tiny_recipe(tiny_neo, tmp_path)
    run = train(recipe)
    assert json.loads((run / RUN_MARKER).read_text())["kind"] == "run"
    adapter = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    data = {**recipe.to_dict()["data"], "train": str(tmp_path / "no.csv")}
    bad = Recipe.from_dict({**recipe.to_dict(), "data": data})
    with pytest.raises(NeogenError):
        train(bad)
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == adapter


def test_a_second_training_into_a_locked_run_is_refused_at_once(tiny_neo, tmp_path):
    recipe = tiny_recipe(tiny_neo, tmp_path)
    folder = tmp_path / "run"
    with Run(folder).claimed():
        pass  # an empty, marked run folder
    holder = hold_lock(folder / RUN_MARKER)  # another process is training into it
    try:
        with pytest.raises(LockedError, match=r"another training is writing it"):
            train(recipe)
        assert sorted(os.listdir(folder)) == [RUN_MARKER]
    finally:
        holder.kill()
        holder.wait()


def test_a_run_written_before_markers_is_adopted(tmp_path):
    folder = tmp_path / "old"
    (folder / "adapter").mkdir(parents=True)
    for name in ("recipe.yaml", "labels.json", "adapter/adapter_config.json"):
        (folder / name).write_text("{}")
    with Run(folder).claimed() as run:
        assert (run.path / RUN_MARKER).is_file()


def test_an_output_dir_that_is_a_file_or_read_only_is_refused_before_loading(tmp_path):
    csv = write_csv(tmp_path / "toy.csv", [("a", "x"), ("b", "y")])
    a_file = tmp_path / "taken"
    a_file.write_text("mine")
    for output_dir, message in ((a_file, "is a file, not a folder"), ("/sys/kernel/neogen-run", "cannot write there")):
        # A model that does not exist: the folder must be refused before anything tries to load it.
        recipe = Recipe.from_dict({"model": {"name": str(tmp_path / "no-model")}, "data": {"train": str(csv)},
                                   "output_dir": str(output_dir)})
        with pytest.raises(OutputError, match=message):
            train(recipe)
    assert a_file.read_text() == "mine"
