"""Attribution maps and how robust they are (Ehsani Oskouie and Farnia, ``000``; Wang et al.,
NeurIPS 2020, ``002``).

- :mod:`~geomrob.interpret.attributions`: Saliency, Integrated Gradients, SmoothGrad and Uniform
  Gradient maps through one driver, :func:`attribute` (batched, chunked, differentiable with
  ``create_graph=True``, gradients from a smooth ``surrogate`` when asked).
- :mod:`~geomrob.interpret.metrics`: dissimilarity (000 Eq. 9), top-k intersection, Spearman's
  rank correlation, mass-center dislocation, cosine distance, and the AUC over log eps of 002.
- :mod:`~geomrob.interpret.hessian`: the closed-form input Hessian of the cross-entropy of a
  ReLU network, :func:`input_hessian_ce` (002 Prop. 3, top eigenpairs through the c x c matrix
  of Supp. B1), and the Smooth Surface Regularization objective :func:`ssr_loss` (002 Def. 7).
- :mod:`~geomrob.interpret.attacks`: per-image attacks on the maps that keep the label: PGD / FGM
  on 000's dissimilarity, Ghorbani et al.'s top-k and mass-center attacks, Dombrowski et al.'s
  manipulate attack, differentiated through a softplus surrogate.
- :mod:`~geomrob.interpret.upi`: universal perturbations for interpretation, UPI-Grad and
  UPI-PCA (000 Algs. 1-2, Prop. 2), the baselines of 000 Table 1 and the evaluation
  :func:`universal_dissimilarity` (000 Eq. 9, label-change rate).
"""

from . import attacks, attributions, hessian, metrics, upi
from .attacks import (
    AttributionAttackResult,
    fgm_attack,
    manipulate_attack,
    mass_center_attack,
    mass_map,
    pgd_attack,
    topk_attack,
)
from .attributions import (
    Attribution,
    AttributionMethod,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    UniGrad,
    attribute,
    integrated_gradients,
    saliency,
    smoothgrad,
    unigrad,
)
from .hessian import (
    CEHessianEigen,
    InputHessianCE,
    SSRLoss,
    input_hessian_ce,
    ssr_loss,
)
from .upi import (
    PowerIteration,
    UniversalDissimilarity,
    UPIResult,
    classification_uap,
    interpretation_gradients,
    random_noise,
    stochastic_power_method,
    universal_dissimilarity,
    upi_grad,
    upi_pca,
)

__all__ = [
    "attributions",
    "metrics",
    "Attribution",
    "AttributionMethod",
    "IntegratedGradients",
    "Saliency",
    "SmoothGrad",
    "UniGrad",
    "attribute",
    "integrated_gradients",
    "saliency",
    "smoothgrad",
    "unigrad",
    "hessian",
    "CEHessianEigen",
    "InputHessianCE",
    "SSRLoss",
    "input_hessian_ce",
    "ssr_loss",
    "attacks",
    "AttributionAttackResult",
    "fgm_attack",
    "manipulate_attack",
    "mass_center_attack",
    "mass_map",
    "pgd_attack",
    "topk_attack",
    "upi",
    "PowerIteration",
    "UniversalDissimilarity",
    "UPIResult",
    "classification_uap",
    "interpretation_gradients",
    "random_noise",
    "stochastic_power_method",
    "universal_dissimilarity",
    "upi_grad",
    "upi_pca",
]
