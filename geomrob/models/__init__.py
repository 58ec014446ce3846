"""Model zoo, softplus surrogate, loading user models, training with a cache."""

from .loading import load_model
from .surrogate import is_piecewise_linear, softplus_surrogate
from .training import TrainConfig, TrainResult, accuracy, eval_mode, train
from .zoo import ACTIVATIONS, ARCHITECTURES, build

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "build",
    "eval_mode",
    "is_piecewise_linear",
    "load_model",
    "softplus_surrogate",
    "train",
]
