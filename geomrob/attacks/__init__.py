"""Adversarial attacks: DeepFool, the 2017 universal perturbation, L-BFGS, FGM / PGD."""

from .deepfool import DeepFoolResult, deepfool
from .gradient import AttackResult, fgm, pgd
from .lbfgs import LBFGSResult, lbfgs
from .universal import (
    NoiseCurve,
    NoiseReference,
    UAPResult,
    fooling_rate,
    fooling_rates,
    noise_fooling_curve,
    rho_rand,
    universal_perturbation,
)

__all__ = [
    "AttackResult",
    "DeepFoolResult",
    "LBFGSResult",
    "NoiseCurve",
    "NoiseReference",
    "UAPResult",
    "deepfool",
    "fgm",
    "fooling_rate",
    "fooling_rates",
    "lbfgs",
    "noise_fooling_curve",
    "pgd",
    "rho_rand",
    "universal_perturbation",
]
