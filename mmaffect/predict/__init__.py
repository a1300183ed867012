"""Prediction: from videos (and a checkpoint, or the ``baseline``) to per-frame predictions."""

from mmaffect.predict.result import AU_THRESHOLD, VideoPrediction, load_prediction, save_prediction

__all__ = ["AU_THRESHOLD", "VideoPrediction", "load_prediction", "save_prediction"]
