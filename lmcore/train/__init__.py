"""Training language models from scratch with Accelerate: config, presets, the loop."""

from lmcore.train.config import TrainConfig, build_arg_parser, config_from_args, resolve_config
from lmcore.train.loop import RunExists, TrainingDiverged, train
from lmcore.train.presets import PRESET_NAMES, PRESETS

__all__ = [
    "PRESETS", "PRESET_NAMES", "RunExists", "TrainConfig", "TrainingDiverged", "build_arg_parser",
    "config_from_args", "resolve_config", "train",
]
