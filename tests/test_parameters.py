"""Notebook parameters: every one has a check, defaults pass, a bad value stops with one line."""

import re
from pathlib import Path

import pytest

from mixseg_lite import InputError
from mixseg_lite.notebooks import list_notebooks, notebook_parameters
from mixseg_lite.parameters import SPECS, check_parameter, check_parameters, parameters_in

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = list_notebooks(ROOT / "notebooks")

BAD_VALUES = {  # one bad value per parameter name, and what the message must say
    "seed": (-1, "parameter seed must be an integer >= 0"), "num_threads": (0, "parameter num_threads must be an integer >= 1"),
    "output_dir": ("", "parameter output_dir must be a non-empty string"),
    "image_size": (8, "parameter image_size must be an integer >= 16 and <= 1024"),
    "dataset": ("acdc2", "parameter dataset must be one of 'simulated_cardiac'"),
    "data_dir": (3, "parameter data_dir must be a non-empty string or None"),
    "public_dataset": ("atlas", "parameter public_dataset must be one of 'acdc'"),
    "max_cases": (0, "parameter max_cases must be an integer >= 1 or None"),
    "n_volumes": (2.5, "parameter n_volumes must be an integer >= 1"), "n_slices": (0, "parameter n_slices must be"),
    "cardiac_volumes": (0, "parameter cardiac_volumes must be"), "cardiac_slices": ("8", "parameter cardiac_slices must be"),
    "brain_volumes": (-1, "parameter brain_volumes must be"), "brain_slices": (None, "parameter brain_slices must be"),
    "brain_modalities": ("T1", "parameter brain_modalities must be a non-empty list of names"),
    "phantom_modalities": ("T1", "parameter phantom_modalities must be a non-empty list of names"),
    "modalities": ([], "parameter modalities must be a non-empty list of names or None"),
    "split_sizes": ({"full": -1}, "parameter split_sizes must map group names to counts >= 0"),
    "split": ([1, 2], "parameter split must map group names to counts"),
    "weak_kind": ("blobs", "parameter weak_kind must be one of 'seeds', 'scribbles'"),
    "weak_seed": (1.0, "parameter weak_seed must be an integer >= 0"),
    "static_figures": ("yes", "parameter static_figures must be True or False or None"),
    "method": ("kl_ent2", "parameter method must be one of 'lower_bound'"),
    "methods": (["kl", "magic"], "parameter methods must be a non-empty list of names from lower_bound"),
    "recipe": ("paper", "parameter recipe must be one of 'ours', 'authors', 'authors_defaults'"),
    "recipe_overrides": ([("lr", 1)], "parameter recipe_overrides must be a mapping"),
    "assert_orderings": (1, "parameter assert_orderings must be True or False"),
    "share_recipes": (["ours", "paper"], "parameter share_recipes must be a non-empty list of names from ours"),
    "epochs": (-1, "parameter epochs must be an integer >= 0"), "batch_size": (0, "parameter batch_size must be"),
    "learning_rate": (0.0, "parameter learning_rate must be a number > 0 or None"),
    "weight_decay": (-1e-4, "parameter weight_decay must be a number >= 0 or None"),
    "base_width": (0, "parameter base_width must be"), "depth": (9, "parameter depth must be an integer >= 1 and <= 8"),
    "norm": ("layer", "parameter norm must be one of 'batch'"),
    "lambda_kd": (-10.0, "parameter lambda_kd must be a number >= 0 or None"),
    "lambda_ent": ("0.1", "parameter lambda_ent must be a number"),
    "temperature": (0.0, "parameter temperature must be a number > 0"),
    "pseudo_threshold": (1.5, "parameter pseudo_threshold must be a number >= 0 and <= 1 or None"),
    "ramp_up_epochs": (-2, "parameter ramp_up_epochs must be"), "dice_weight": (-1.0, "parameter dice_weight must be"),
    "class_balance": (float("inf"), "parameter class_balance must be a number"),
    "er_weight": (-1.0, "parameter er_weight must be a number >= 0"), "cmer_weight": (None, "parameter cmer_weight must be"),
    "equivariance_reduction": ("sum", "parameter equivariance_reduction must be one of 'reference'"),
    "foreground_map": ("absent", "parameter foreground_map must be one of 'present'"),
    "transform_fill": ("mean", "parameter transform_fill must be one of 'background'"),
    "tag_weighting": ("inverse", "parameter tag_weighting must be one of 'none'"),
    "lr_schedule": ("step", "parameter lr_schedule must be one of 'constant'"),
    "regulariser_warmup": (1.5, "parameter regulariser_warmup must be an integer >= 0"),
    "kl_weight": (-0.5, "parameter kl_weight must be"), "tau": (0, "parameter tau must be a number > 0"),
    "transform_kinds": (["hflip", "shear"], "parameter transform_kinds must be a non-empty list of names from identity"),
    "max_shift": (1.0, "parameter max_shift must be a number >= 0 and <= 0.99"),
    "scale_range": ([0.0, 1.3], "parameter scale_range must be a non-empty list of numbers in [0.01, 100]"),
    "thresholds": ([0.5, 1.2], "parameter thresholds must be a non-empty list of numbers in [0, 1]"),
    "device": (0, "parameter device must be a non-empty string"), "amp": ("no", "parameter amp must be one of False, True, 'auto'"),
    "channels_last": (1, "parameter channels_last must be True or False or None"),
    "compile": (1, "parameter compile must be True or False or None"),
    "checkpoint_dir": ("", "parameter checkpoint_dir must be a non-empty string or None"),
    "resume": ("true", "parameter resume must be True or False"),
}


def test_every_spec_has_a_bad_value_test():
    assert set(BAD_VALUES) == set(SPECS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_parameter_of_every_notebook_has_a_check_and_its_default_passes(notebook):
    defaults = notebook_parameters(notebook)
    assert set(defaults) <= set(SPECS), f"no check for {sorted(set(defaults) - set(SPECS))}"
    for name, value in defaults.items():
        check_parameter(name, value)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_stops_with_one_line_naming_the_parameter(name):
    value, message = BAD_VALUES[name]
    with pytest.raises(InputError, match=re.escape(message)) as error:
        check_parameter(name, value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_params_are_exactly_the_parameters_cell(notebook):
    """What a notebook's setup cell sees: its parameters, then modules, functions and constants."""
    import numpy as np

    import mixseg_lite

    namespace = {"__name__": "__main__", "_": None, **notebook_parameters(notebook),
                 "np": np, "mixseg_lite": mixseg_lite, "check_parameters": check_parameters,
                 "METHODS": {"kl": {}}, "DEFAULT_GROUPS": ("full",)}
    params = check_parameters(namespace)
    assert params == notebook_parameters(notebook)


def test_an_unknown_parameter_is_named():
    with pytest.raises(InputError, match="unknown notebook parameter 'learning_rates'"):
        check_parameters({"seed": 0, "learning_rates": [0.1]})
    assert parameters_in({"seed": 0, "In": [], "Out": {}, "_i1": "x", "MAX": 3}) == {"seed": 0}


def test_loss_weights_may_be_given_per_modality():
    check_parameter("er_weight", {"T2": 10.0, "FLAIR": 100.0})
    with pytest.raises(InputError, match="parameter er_weight must be a number >= 0 or a mapping"):
        check_parameter("er_weight", {"T2": -1.0})
