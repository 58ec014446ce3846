"""Boundary points, Hessian-vector products, averaged boundary operators, Lanczos."""

from .boundary import BoundaryPoints, boundary_points

__all__ = ["BoundaryPoints", "boundary_points"]
