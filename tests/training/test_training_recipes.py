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
