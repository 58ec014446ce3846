"""Boundary points, Hessian-vector products, averaged boundary operators, Lanczos."""

from .boundary import BoundaryPoints, boundary_points
from .hvp import MODES, hvp
from .lanczos import EigResult, lanczos
from .operators import (
    BoundaryHessian,
    DenseOperator,
    FunctionOperator,
    LinearOperator,
    ProjectionOperator,
)

__all__ = [
    "MODES",
    "BoundaryHessian",
    "BoundaryPoints",
    "DenseOperator",
    "EigResult",
    "FunctionOperator",
    "LinearOperator",
    "ProjectionOperator",
    "boundary_points",
    "hvp",
    "lanczos",
]
