"""geomrob: the geometry of classifiers' decision boundaries and the universal perturbations it
explains.

Importing geomrob has no side effects. The public API is ``geomrob.__all__``; subpackages
(``geomrob.data``, ``geomrob.models``, ``geomrob.attacks``, ``geomrob.curvature``) hold the rest.
"""

__version__ = "0.1.0"

from . import attacks, curvature, data, interpret, models, sections, study, subspaces, theory  # noqa: E402
from .attacks import (  # noqa: E402
    DeepFoolResult,
    UAPResult,
    deepfool,
    fgm,
    fooling_rate,
    fooling_rates,
    lbfgs,
    noise_fooling_curve,
    pgd,
    rho_rand,
    universal_perturbation,
)
from .curvature import (  # noqa: E402
    BoundaryHessian,
    BoundaryPoints,
    EigResult,
    boundary_points,
    hvp,
    lanczos,
)
from .lipschitz import (  # noqa: E402
    EmpiricalLipschitz,
    LipschitzReport,
    LipschitzRow,
    empirical_lipschitz,
    lipschitz_bounds,
)
from .models import softplus_surrogate  # noqa: E402
from .sections import CrossSection, cross_section, normal_section  # noqa: E402
from .softmax import (  # noqa: E402
    DirectionInvariance,
    FeatureCollision,
    ParallelPairs,
    SoftmaxNullSpace,
    SplitModel,
    direction_invariance,
    feature_collision,
    parallel_pairs,
    softmax_null_space,
    split_last_linear,
)
from .study import StudyConfig, StudyResult, subspace_study  # noqa: E402
from .subspaces import (  # noqa: E402
    CurvatureProfile,
    CurvatureResult,
    Diversity,
    Subspace,
    SubspaceFooling,
    average_curvature,
    curvature_profile,
    curved_subspace,
    diversity,
    normal_subspace,
    principal_angles,
    random_subspace,
    sample_subspace,
    subspace_fooling,
)

__all__ = [
    "__version__",
    # data and models
    "data",
    "models",
    "softplus_surrogate",
    # first order: minimal and universal perturbations
    "attacks",
    "DeepFoolResult",
    "deepfool",
    "BoundaryPoints",
    "boundary_points",
    "UAPResult",
    "universal_perturbation",
    "fooling_rate",
    "fooling_rates",
    "noise_fooling_curve",
    "rho_rand",
    "lbfgs",
    "fgm",
    "pgd",
    # second order
    "curvature",
    "hvp",
    "BoundaryHessian",
    "lanczos",
    "EigResult",
    # attributions
    "interpret",
    # subspaces
    "subspaces",
    "Subspace",
    "curved_subspace",
    "normal_subspace",
    "random_subspace",
    "sample_subspace",
    "principal_angles",
    "average_curvature",
    "CurvatureResult",
    "curvature_profile",
    "CurvatureProfile",
    "subspace_fooling",
    "SubspaceFooling",
    "diversity",
    "Diversity",
    # softmax null spaces (003)
    "softmax_null_space",
    "SoftmaxNullSpace",
    "direction_invariance",
    "DirectionInvariance",
    "parallel_pairs",
    "ParallelPairs",
    "split_last_linear",
    "SplitModel",
    "feature_collision",
    "FeatureCollision",
    # Lipschitz bounds (004)
    "lipschitz_bounds",
    "LipschitzReport",
    "LipschitzRow",
    "empirical_lipschitz",
    "EmpiricalLipschitz",
    # cross-sections and the theory of 001
    "sections",
    "cross_section",
    "normal_section",
    "CrossSection",
    "theory",
    # the study of 001 Sec. 5
    "study",
    "subspace_study",
    "StudyConfig",
    "StudyResult",
]
