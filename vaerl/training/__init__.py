"""Pretraining encoders on frame datasets."""

from vaerl.training.config import DataConfig, PretrainConfig, TrainConfig, WeightingConfig
from vaerl.training.pretrain import CHECKPOINT, METRICS, TRAIN_STATE, pretrain

__all__ = ["CHECKPOINT", "METRICS", "TRAIN_STATE", "DataConfig", "PretrainConfig", "TrainConfig",
           "WeightingConfig", "pretrain"]
