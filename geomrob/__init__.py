"""geomrob: the geometry of classifiers' decision boundaries and the universal perturbations it
explains.

Importing geomrob has no side effects. The public API is ``geomrob.__all__``; subpackages
(``geomrob.data``, ``geomrob.models``) hold the rest.
"""

__version__ = "0.1.0"

from . import data, models  # noqa: E402
from .models import softplus_surrogate  # noqa: E402

__all__ = [
    "__version__",
    # data and models
    "data",
    "models",
    "softplus_surrogate",
]
