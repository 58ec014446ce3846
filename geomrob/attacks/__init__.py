"""Adversarial attacks: DeepFool, the 2017 universal perturbation, L-BFGS, FGM / PGD."""

from .deepfool import DeepFoolResult, deepfool

__all__ = ["DeepFoolResult", "deepfool"]
