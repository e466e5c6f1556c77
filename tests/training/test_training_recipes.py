"""Named training recipes: the published one is TrainConfig's defaults, explicit options override a recipe."""

from __future__ import annotations

from dataclasses import fields

import pytest

from dunemap.demo import DemoConfig
from dunemap.errors import ConfigError
from dunemap.training.config import RECIPES, TrainConfig, recipe_config


def test_published_recipe_is_the_trainconfig_defaults() -> None:
    defaults = TrainConfig(data_root="D", save_dir="R")
    assert {k: getattr(defaults, k) for k in RECIPES["published"]} == RECIPES["published"]
    assert defaults.recipe == "published"


def test_every_recipe_names_only_trainconfig_fields() -> None:
    names = {f.name for f in fields(TrainConfig)}
    for recipe, values in RECIPES.items():
        assert set(values) <= names, recipe
        assert set(values) == set(RECIPES["published"]), recipe  # each recipe sets the same options


def test_small_data_recipe_is_what_the_demo_trains_with() -> None:
    demo = DemoConfig()
    small = RECIPES["small-data"]
    assert (demo.model, demo.lr, demo.class_weights, demo.augment, demo.batch_size, demo.epochs) == (
        small["model"], small["lr"], small["class_weights"], small["augment"], small["batch_size"], small["epochs"])
    assert (small["model"], small["lr"], small["class_weights"], small["augment"], small["batch_size"],
            small["epochs"]) == ("mit_b0", 1.2e-3, "balanced", "flip_rot90_spectral", 8, 32)


def test_recipe_config_explicit_options_win_and_the_recipe_is_recorded() -> None:
    config = recipe_config("small-data", data_root="D", save_dir="R", epochs=3)
    assert (config.lr, config.epochs, config.model, config.recipe) == (1.2e-3, 3, "mit_b0", "small-data")
    assert config.to_dict()["recipe"] == "small-data"
    with pytest.raises(ConfigError, match="unknown recipe 'tiny'; valid: published, small-data"):
        recipe_config("tiny", data_root="D", save_dir="R")


def test_api_train_takes_a_recipe_and_records_it(tmp_path, make_tiny_dataset) -> None:
    import yaml

    import dunemap

    data = make_tiny_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=1)
    tiny = {"data_root": data, "model": "mit_tiny", "in_channels": 16, "text": "random",
            "catalog": data / "catalog.yaml", "epochs": 1, "max_steps_per_epoch": 1, "calibrate": False,
            "device": "cpu", "progress": False}
    dunemap.train(save_dir=tmp_path / "a", recipe="small-data", **tiny)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert (saved["recipe"], saved["lr"], saved["batch_size"], saved["class_weights"]) == ("small-data", 1.2e-3, 8,
                                                                                          "balanced")
    assert saved["model"] == "mit_tiny"  # given explicitly: wins over the recipe's mit_b0
    # a config given whole, then a recipe: the recipe's values replace the config's, the other options win
    base = TrainConfig(save_dir=tmp_path / "b", **tiny)
    dunemap.train(base, recipe="small-data", lr=3e-4, model="mit_tiny", epochs=1)
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert (saved["recipe"], saved["lr"], saved["augment"]) == ("small-data", 3e-4, "flip_rot90_spectral")
