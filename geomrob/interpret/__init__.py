"""Attribution maps and how robust they are (Ehsani Oskouie and Farnia, ``000``; Wang et al.,
NeurIPS 2020, ``002``).

- :mod:`~geomrob.interpret.attributions`: Saliency, Integrated Gradients, SmoothGrad and Uniform
  Gradient maps through one driver, :func:`attribute` (batched, chunked, differentiable with
  ``create_graph=True``, gradients from a smooth ``surrogate`` when asked).
- :mod:`~geomrob.interpret.metrics`: dissimilarity (000 Eq. 9), top-k intersection, Spearman's
  rank correlation, mass-center dislocation, cosine distance, and the AUC over log eps of 002.
"""

from . import attributions, metrics
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
]
