r"""The subspace study of 001 Section 5 as one cached pipeline.

Moosavi-Dezfooli et al., "Robustness of classifiers to universal perturbations: a geometric
perspective" (ICLR 2018, ``001`` in ``shared/seeds``) compare three ways to build a universal
perturbation of a fixed norm, on points the construction has not seen:

- a random vector of the curved subspace :math:`S_c` (top-``m`` eigenvectors of the averaged
  boundary Hessian of ``n = 100`` training points), which Theorem 2 predicts to be universal;
- a random vector of the normal subspace :math:`S_f` (top-``m`` right singular vectors of the
  DeepFool normals of the training set), which is what Theorem 1 (flat model) suggests;
- the 2017 UAP algorithm fitted on at least 2000 training points (the dotted line of Fig. 7b);

at the norm :math:`\rho_{rand} / 5`, where :math:`\rho_{rand}` is the norm at which isotropic
noise fools half of the points (DESIGN.md section 3). Fig. 7a adds the average curvature
:math:`K_S` along :math:`S_c` on unseen points against random subspaces.

:func:`subspace_study` runs all of it for one model: each stage is cached in ``cache_dir`` by
a hash of the model's weights, the data and the stage's settings, written atomically, so an
interrupted study resumes at the stage it was in (the UAP resumes after its last pass).
Nothing is tuned: the settings are those of the paper unless the caller changes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._io import config_hash, model_fingerprint, save_torch, tensor_fingerprint
from ._model import eval_mode
from ._validation import check_choice, check_int, check_real
from .attacks import deepfool, fooling_rate, rho_rand, universal_perturbation
from .curvature.boundary import BoundaryPoints, boundary_points
from .curvature.hvp import MODES
from .models.surrogate import is_piecewise_linear
from .results import Result
from .subspaces import (
    CurvatureProfile,
    Subspace,
    SubspaceFooling,
    curvature_profile,
    curved_subspace,
    normal_subspace,
    random_subspace,
    subspace_fooling,
)

__all__ = ["StudyConfig", "StudyResult", "subspace_study"]

log = logging.getLogger("geomrob.study")


@dataclass(frozen=True)
class StudyConfig(Result):
    """Settings of :func:`subspace_study`; the defaults are 001's.

    Attributes:
        ms: subspace dimensions of the curves (the largest is the number of eigenvectors).
        mode: Hessian-vector product mode for :math:`S_c` and :math:`K_S` (see
            :func:`geomrob.hvp`); ``None`` picks ``"exact"`` for smooth models and
            ``"finite_difference"`` for piecewise-linear ones (ReLU, max-pool), whose exact
            Hessian vanishes.
        h: finite-difference step in input units (``None``: ``0.1 ||r||`` per point).
        h_scale: instead of ``h``, the step relative to each point's ``||r||`` (ablations).
        beta: softplus sharpness for ``mode="surrogate"``.
        sigma: smoothing scale for ``mode="smoothed"`` (``None``: ``0.1 ||r||``).
        sigma_scale: instead of ``sigma``, the scale relative to each point's ``||r||``.
        n_samples: Stein samples per point for ``mode="smoothed"``.
        project: tangent projection in the averaged operator (001 averages raw Hessians).
        normalize: divide each Hessian by ``||grad F||``.
        which: ``"LA"`` (most positive curvature: :math:`S_c`) or ``"SA"`` (the most negative:
            a control).
        n_vectors: random vectors per ``m`` ("the best universal perturbation" of 001 is the
            best of them; their mean is what a random draw gives).
        norm_fraction: the perturbation norm as a fraction of :math:`\rho_{rand}` (001: 1/5).
        noise_target: the fooling rate of isotropic noise that defines :math:`\rho_{rand}`.
        n_curvature: unseen points (the first of the evaluation set) for :math:`K_S`.
        n_dirs: directions per subspace for :math:`K_S`.
        n_random: random subspaces per ``m`` for the baselines.
        uap_delta: the UAP algorithm stops at a fooling rate of ``1 - uap_delta``.
        uap_max_passes: and after this many passes.
        seed: seeds every random choice of the study.
    """

    ms: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
    mode: str | None = None
    h: float | None = None
    beta: float | None = None
    sigma: float | None = None
    n_samples: int | None = None
    h_scale: float | None = None
    sigma_scale: float | None = None
    project: bool = False
    normalize: bool = False
    which: str = "LA"
    n_vectors: int = 10
    norm_fraction: float = 0.2
    noise_target: float = 0.5
    n_curvature: int = 200
    n_dirs: int = 32
    n_random: int = 4
    uap_delta: float = 0.2
    uap_max_passes: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        ms = tuple(check_int(m, "ms", low=1) for m in self.ms)
        if not ms or list(ms) != sorted(set(ms)):
            raise ValueError(f"`ms` must be increasing distinct dimensions; got {self.ms!r}.")
        object.__setattr__(self, "ms", ms)
        if self.mode is not None:
            check_choice(self.mode, "mode", MODES)
        check_choice(self.which, "which", ("LA", "SA"))
        check_int(self.n_vectors, "n_vectors", low=1)
        check_real(self.norm_fraction, "norm_fraction", low=0.0, low_inclusive=False)
        check_real(self.noise_target, "noise_target", low=0.0, high=1.0, low_inclusive=False)
        check_int(self.n_curvature, "n_curvature", low=1)
        check_int(self.n_dirs, "n_dirs", low=1)
        check_int(self.n_random, "n_random", low=1)
        check_real(self.uap_delta, "uap_delta", low=0.0, high=1.0, low_inclusive=False)
        check_int(self.uap_max_passes, "uap_max_passes", low=1)
        for name, absolute in (("h", self.h), ("sigma", self.sigma)):
            scale = getattr(self, f"{name}_scale")
            if scale is not None:
                check_real(scale, f"{name}_scale", low=0.0, low_inclusive=False)
                if absolute is not None:
                    raise ValueError(f"give `{name}` or `{name}_scale`, not both.")

    def resolved_mode(self, model: nn.Module) -> str:
        """The Hessian-vector product mode used for ``model``."""
        if self.mode is not None:
            return self.mode
        return "finite_difference" if is_piecewise_linear(model) else "exact"

    def hvp_options(self, points: BoundaryPoints | None = None) -> dict[str, Any]:
        """The options of the chosen mode, for :func:`curved_subspace` and the profile; with
        ``h_scale`` / ``sigma_scale``, per-point steps ``scale * ||r_i||`` of ``points``."""
        opts = {"h": self.h, "beta": self.beta, "sigma": self.sigma, "n_samples": self.n_samples}
        for name in ("h", "sigma"):
            scale = getattr(self, f"{name}_scale")
            if scale is not None and points is not None:
                opts[name] = scale * points.r.flatten(1).norm(dim=1)
        return opts

    def _key(self) -> dict[str, Any]:
        """The options that change S_c and K_S (the scales only when set: stable hashes)."""
        key = {"h": self.h, "beta": self.beta, "sigma": self.sigma, "n_samples": self.n_samples}
        for name in ("h_scale", "sigma_scale"):
            if getattr(self, name) is not None:
                key[name] = getattr(self, name)
        return key


@dataclass(frozen=True, eq=False)
class StudyResult(Result):
    """Everything :func:`subspace_study` measured.

    Attributes:
        config: the :class:`StudyConfig`.
        mode: the Hessian-vector product mode used.
        n_fit: training points of :math:`S_c` (converged boundary points among them:
            ``curved.n_points`` is not stored; see ``fit_converged``).
        fit_converged: how many of them had a boundary point (the others are excluded).
        n_uap: training points of the UAP and of the normals of :math:`S_f`.
        n_eval: unseen points of the fooling rates.
        curved: :math:`S_c` (``max(ms)`` rows, eigenvalues in ``values``).
        normal: :math:`S_f` (``max(ms)`` rows, singular values in ``values``).
        rho_rand: the isotropic-noise reference norm on the evaluation points.
        norm: the norm of every universal perturbation, ``norm_fraction * rho_rand``.
        noise_rate: the fooling rate of isotropic noise of that norm (fixed directions).
        curved_fooling: fooling rates of random vectors of :math:`S_c` vs ``m``.
        normal_fooling: the same for :math:`S_f`.
        random_fooling: the same for one Haar-random subspace (a baseline).
        uap: the 2017 algorithm's perturbation (flat, ``(d,)``) at the same norm.
        uap_rate: its fooling rate on the evaluation points.
        uap_fit_rate: on its fitting points.
        uap_history: fitting-set rate after each pass.
        profile: :math:`K_S` vs ``m`` on ``n_curvature`` unseen points, against random
            subspaces (001 Fig. 7a).
        seconds: wall time per stage (0 for a stage read from the cache).
    """

    config: StudyConfig
    mode: str
    n_fit: int
    fit_converged: int
    n_uap: int
    n_eval: int
    curved: Subspace
    normal: Subspace
    rho_rand: float
    norm: float
    noise_rate: float
    curved_fooling: SubspaceFooling
    normal_fooling: SubspaceFooling
    random_fooling: SubspaceFooling
    uap: Tensor
    uap_rate: float
    uap_fit_rate: float
    uap_history: list[float]
    profile: CurvatureProfile
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The numbers of 001 Fig. 7a/7b as plain lists (for JSON and tables)."""
        ms = self.config.ms
        prof = self.profile
        return {
            "mode": self.mode,
            "n_fit": self.n_fit,
            "fit_converged": self.fit_converged,
            "n_uap": self.n_uap,
            "n_eval": self.n_eval,
            "rho_rand": self.rho_rand,
            "norm": self.norm,
            "noise_rate": self.noise_rate,
            "ms": list(ms),
            "curved_mean": self.curved_fooling.mean.tolist(),
            "curved_best": self.curved_fooling.best.tolist(),
            "curved_std": self.curved_fooling.std.tolist(),
            "normal_mean": self.normal_fooling.mean.tolist(),
            "normal_best": self.normal_fooling.best.tolist(),
            "normal_std": self.normal_fooling.std.tolist(),
            "random_mean": self.random_fooling.mean.tolist(),
            "random_best": self.random_fooling.best.tolist(),
            "uap_rate": self.uap_rate,
            "uap_fit_rate": self.uap_fit_rate,
            "uap_history": list(self.uap_history),
            "curved_values": self.curved.values.tolist()
            if self.curved.values is not None
            else None,
            "normal_values": self.normal.values.tolist()
            if self.normal.values is not None
            else None,
            "K_mean": prof.mean.tolist(),
            "K_std": prof.std.tolist(),
            "K_random_mean": prof.random_mean.tolist() if prof.random_mean is not None else None,
            "K_random_std": prof.random_std.tolist() if prof.random_std is not None else None,
            "K_raw_mean": prof.raw_mean.tolist(),
            "K_points": int(prof.converged.sum()),
            "seconds": dict(self.seconds),
        }


def _tolist(t: Tensor | None) -> list | None:
    return None if t is None else t.tolist()


class _Cache:
    """``<dir>/<stage>-<hash>.pt`` files, or nothing when no directory is given."""

    def __init__(self, directory: str | Path | None, base: dict[str, Any]) -> None:
        self.dir = None if directory is None else Path(directory)
        self.base = base
        self.seconds: dict[str, float] = {}

    def path(self, stage: str, key: dict[str, Any]) -> Path | None:
        if self.dir is None:
            return None
        return self.dir / f"{stage}-{config_hash({**self.base, 'stage': stage, **key})}.pt"

    def get(self, stage: str, key: dict[str, Any], compute: Callable[[], dict]) -> dict:
        path = self.path(stage, key)
        if path is not None and path.exists():
            log.info("study: %s from %s", stage, path)
            self.seconds[stage] = 0.0
            return torch.load(path, map_location="cpu", weights_only=True)
        log.info("study: computing %s", stage)
        t0 = time.perf_counter()
        value = compute()
        self.seconds[stage] = time.perf_counter() - t0
        if path is not None:
            save_torch(value, path)
        return value


def _points_to_dict(p: BoundaryPoints) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in asdict(p).items()}


def _points_from_dict(d: dict[str, Tensor], like: Tensor) -> BoundaryPoints:
    def move(t: Tensor) -> Tensor:
        return t.to(like.device, like.dtype) if t.is_floating_point() else t.to(like.device)

    return BoundaryPoints(**{k: move(v) for k, v in d.items()})


def _subspace_to_dict(s: Subspace) -> dict[str, Any]:
    return {
        "basis": s.basis.detach().cpu(),
        "values": None if s.values is None else s.values.detach().cpu(),
        "kind": s.kind,
    }


def subspace_study(
    model: nn.Module,
    x_fit: Tensor,
    x_uap: Tensor,
    x_eval: Tensor,
    config: StudyConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> StudyResult:
    r"""001 Fig. 7: :math:`S_c` vs :math:`S_f` vs the UAP algorithm, and :math:`K_S` vs ``m``.

    Stages (each cached in ``cache_dir`` when given):

    1. boundary points of ``x_fit`` (001: ``n = 100`` training points) and :math:`S_c`, the
       top ``max(ms)`` eigenvectors of their averaged boundary operator
       (:func:`~geomrob.subspaces.curved_subspace`, ``which="SA"`` for the control);
    2. DeepFool normals of ``x_uap`` and :math:`S_f` (:func:`~geomrob.subspaces.normal_subspace`,
       unit rows; the points DeepFool did not move across are left out of the SVD);
    3. :math:`\rho_{rand}` on ``x_eval`` (:func:`~geomrob.attacks.rho_rand`) and the norm
       ``norm_fraction * rho_rand``;
    4. the 2017 UAP algorithm on ``x_uap`` at that norm (l2), resumable pass by pass;
    5. fooling rates on ``x_eval`` of ``n_vectors`` random vectors of that norm from
       :math:`S_c`, :math:`S_f` and a random subspace, for each ``m`` in ``ms``
       (:func:`~geomrob.subspaces.subspace_fooling`);
    6. :math:`K_S` on the boundary points of the first ``n_curvature`` points of ``x_eval``,
       along :math:`S_c` and random subspaces (:func:`~geomrob.subspaces.curvature_profile`).

    Args:
        model: classifier returning logits (evaluated in eval mode).
        x_fit: ``(n, *input_shape)`` training points for :math:`S_c`.
        x_uap: ``(N, *input_shape)`` training points for the UAP algorithm and :math:`S_f`.
        x_eval: ``(M, *input_shape)`` unseen points for every rate and for :math:`K_S`.
        config: a :class:`StudyConfig` (default: 001's settings).
        cache_dir: folder for the stage caches (``None``: nothing is cached).
        progress: tqdm bars for the long stages.

    Returns:
        :class:`StudyResult`.

    Raises:
        ValueError: when ``max(ms)`` exceeds the input dimension or a stage's own check
            fails (bad model or inputs).
    """
    config = StudyConfig() if config is None else config
    if not isinstance(config, StudyConfig):
        raise TypeError(f"`config` must be a StudyConfig; got {type(config).__name__}.")
    for name, t in (("x_fit", x_fit), ("x_uap", x_uap), ("x_eval", x_eval)):
        if not isinstance(t, Tensor) or t.dim() < 2 or len(t) == 0:
            raise ValueError(f"`{name}` must be a non-empty batch (n, *input_shape) tensor.")
    d = x_fit[0].numel()
    m_max = max(config.ms)
    if m_max > d:
        raise ValueError(f"`config.ms` goes up to {m_max}, above the input dimension d = {d}.")
    mode = config.resolved_mode(model)
    seed = config.seed
    base = {"model": model_fingerprint(model), "dtype": str(x_fit.dtype), "seed": seed}
    cache = _Cache(cache_dir, base)
    subspace_key = {
        "x_fit": tensor_fingerprint(x_fit),
        "mode": mode,
        "which": config.which,
        "m": m_max,
        "project": config.project,
        "normalize": config.normalize,
        **config._key(),
    }

    with eval_mode(model):
        # 1. boundary points of the fitting set and S_c
        def fit_stage() -> dict:
            pts = boundary_points(model, x_fit)
            sc = curved_subspace(
                model,
                None,
                m_max,
                points=pts,
                mode=mode,
                project=config.project,
                normalize=config.normalize,
                which=config.which,
                generator=seed,
                progress=progress,
                **config.hvp_options(pts),
            )
            return {"points": _points_to_dict(pts), "subspace": _subspace_to_dict(sc)}

        fit = cache.get("curved", subspace_key, fit_stage)
        fit_points = _points_from_dict(fit["points"], x_fit)
        curved = Subspace(
            basis=fit["subspace"]["basis"].to(x_fit.device, x_fit.dtype),
            values=fit["subspace"]["values"],
            kind="curved",
        )

        # 2. normals of the UAP set and S_f
        def normal_stage() -> dict:
            res = deepfool(model, x_uap)
            return {"r": res.r.detach().cpu(), "converged": res.converged.cpu()}

        normals = cache.get("normals", {"x_uap": tensor_fingerprint(x_uap)}, normal_stage)
        r = normals["r"][normals["converged"]].to(x_uap.device, x_uap.dtype)
        if len(r) < m_max:
            raise ValueError(
                f"DeepFool moved only {len(r)} of the {len(x_uap)} UAP points across the "
                f"boundary; S_f needs at least max(ms) = {m_max}."
            )
        normal = normal_subspace(r.flatten(1), m_max)

        # 3. the reference norm
        eval_key = {"x_eval": tensor_fingerprint(x_eval), "target": config.noise_target}

        def rho_stage() -> dict:
            ref = rho_rand(model, x_eval, target=config.noise_target, generator=seed)
            return {"rho": ref.rho, "converged": ref.converged}

        rho = cache.get("rho_rand", eval_key, rho_stage)
        if not rho["converged"]:
            raise ValueError(
                f"isotropic noise never fools {config.noise_target:.0%} of x_eval: no reference "
                "norm rho_rand (see geomrob.rho_rand)."
            )
        rho_value = float(rho["rho"])
        norm = config.norm_fraction * rho_value
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(x_eval), d, generator=gen, dtype=torch.float64)
        noise = (norm * noise / noise.norm(dim=1, keepdim=True)).to(x_eval.device, x_eval.dtype)
        with torch.no_grad():
            clean = model(x_eval).argmax(1)
            noisy = model(x_eval + noise.view_as(x_eval)).argmax(1)
        noise_rate = float((clean != noisy).double().mean())

        # 4. the 2017 algorithm at the same norm
        uap_key = {
            "x_uap": tensor_fingerprint(x_uap),
            "xi": norm,
            "delta": config.uap_delta,
            "max_passes": config.uap_max_passes,
        }

        def uap_stage() -> dict:
            state = cache.path("uap-state", uap_key)
            res = universal_perturbation(
                model,
                x_uap,
                xi=norm,
                p=2,
                delta=config.uap_delta,
                max_passes=config.uap_max_passes,
                generator=seed,
                state_path=state,
                progress=progress,
            )
            return {"v": res.v.detach().cpu(), "fit_rate": res.fooling_rate, "history": res.history}

        uap = cache.get("uap", uap_key, uap_stage)
        v = uap["v"].to(x_eval.device, x_eval.dtype)
        uap_rate = fooling_rate(model, x_eval, v)

        # 5. random vectors of S_c, S_f and a random subspace
        def fooling_stage() -> dict:
            baseline = random_subspace(d, m_max, generator=seed + 1, dtype=x_eval.dtype)
            baseline = Subspace(basis=baseline.basis.to(x_eval.device), values=None, kind="random")
            out = {}
            for name, s in (("curved", curved), ("normal", normal), ("random", baseline)):
                res = subspace_fooling(
                    model, x_eval, s, config.ms, norm, n_vectors=config.n_vectors, generator=seed
                )
                out[name] = {**asdict(res), "ms": res.ms.cpu(), "rates": res.rates.cpu()}
            return out

        fooling_key = {
            **subspace_key,
            **eval_key,
            "x_uap": tensor_fingerprint(x_uap),
            "norm": norm,
            "ms": list(config.ms),
            "n_vectors": config.n_vectors,
        }
        rates = {
            name: SubspaceFooling(**row)
            for name, row in cache.get("fooling", fooling_key, fooling_stage).items()
        }

        # 6. K_S on unseen points
        x_curv = x_eval[: config.n_curvature]

        def profile_stage() -> dict:
            pts = boundary_points(model, x_curv)
            prof = curvature_profile(
                model,
                pts,
                curved,
                list(config.ms),
                n_dirs=config.n_dirs,
                mode=mode,
                generator=seed,
                n_random=config.n_random,
                **config.hvp_options(pts),
            )
            return {k: v for k, v in asdict(prof).items()}

        prof = cache.get(
            "profile",
            {
                **subspace_key,
                "x_curv": tensor_fingerprint(x_curv),
                "ms": list(config.ms),
                "n_dirs": config.n_dirs,
                "n_random": config.n_random,
            },
            profile_stage,
        )
        profile = CurvatureProfile(**prof)

    return StudyResult(
        config=config,
        mode=mode,
        n_fit=len(x_fit),
        fit_converged=int(fit_points.converged.sum()),
        n_uap=len(x_uap),
        n_eval=len(x_eval),
        curved=curved,
        normal=normal,
        rho_rand=rho_value,
        norm=norm,
        noise_rate=noise_rate,
        curved_fooling=rates["curved"],
        normal_fooling=rates["normal"],
        random_fooling=rates["random"],
        uap=v.flatten().cpu(),
        uap_rate=float(uap_rate),
        uap_fit_rate=float(uap["fit_rate"]),
        uap_history=[float(h) for h in uap["history"]],
        profile=profile,
        seconds=dict(cache.seconds),
    )
