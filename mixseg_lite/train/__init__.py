"""Training loops: mixed supervision (REFERENCE A) and tag supervision with CAMs (REFERENCE B)."""

from mixseg_lite.train.mixed import (  # noqa: F401
    METHODS,
    RECIPES,
    MixedConfig,
    evaluate_mixed,
    predict_volumes,
    recipe_table,
    run_mixed_ablation,
    train_mixed,
)
from mixseg_lite.train.cam import CAM_METHODS, CAMConfig, CAMResult, evaluate_cam, train_cam, train_supervised  # noqa: F401,E501
from mixseg_lite.data.datasets import DATASETS, load_dataset  # noqa: F401  (re-exported: notebooks train on them)
from mixseg_lite.train.experiment import ExperimentResult, run_experiment, supported_methods  # noqa: F401
