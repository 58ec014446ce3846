"""Normal cross-sections along the UAP, S_c and random directions (001 Fig. 5, 6, 13).

For a few unseen test images ``x`` (the first ones whose boundary point converged), the labels
of ``--arch`` on the plane ``x + a r(x)/||r(x)|| + b v`` (:func:`geomrob.normal_section`: ``v``
made orthogonal to ``r(x)``; the boundary point ``z = x + r(x)`` sits at ``(||r||, 0)``), for

- ``v`` = the universal perturbation of the 2017 algorithm (001 Fig. 5, 6 top),
- ``v`` = the top vector of :math:`S_c` and a random vector of its first ``--m`` vectors,
- ``v`` = a random direction of ``R^d`` (001 Fig. 5, 6 bottom),
- ``v`` = the top vector of :math:`S_c` of *another* network, ``--other-arch`` (001 Fig. 13),

on a grid of half-width ``--extent`` times ``||r(x)||``. :math:`S_c`, the UAP and the norm come
from :func:`geomrob.study.subspace_study` with 001's settings (``--n`` = 100 training points
for :math:`S_c`, at least 2000, or all, for the UAP), cached in ``--run-dir``/study, so the
other scripts of 001 (``diversity.py``, ``subspace_transfer.py``, ``theory_check.py``) reuse it.

Each panel also gets numbers a reader can check, all dimensionless (in units of ``||r(x)||``):

- ``dist_plus`` / ``dist_minus``: where the boundary of x's region meets the line ``x + b v``
  for ``b > 0`` / ``b < 0`` (first sign change of the margin on the grid, interpolated;
  ``None`` when it stays beyond the extent). Finite on both sides only when the boundary bends
  round x along ``v``: "positively curved", while a flat direction never meets it.
- ``section_curvature``: ``-2 c_2 ||r||`` from a least-squares parabola
  ``a*(b) = c_0 + c_1 b + c_2 b^2`` fitted to the boundary curve of the section (the
  :meth:`~geomrob.CrossSection.boundary_distance` per column) over ``|b| <= --fit-width
  ||r||``: the curvature of the section at the scale of the figure, > 0 when the boundary bends
  towards ``x`` (DESIGN.md section 3).
- ``local_curvature``: ``||r|| e^T H_z e / ||grad F(z)||`` at ``z`` along the unit tangent ``e``
  of the section (:func:`geomrob.theory.normal_section_curvature`, ``.tangent``), with the
  study's Hessian-vector product mode (``finite_difference`` at step ``0.1 ||r||`` for ReLU
  networks, whose exact Hessian vanishes).

001's claim is that the UAP and :math:`S_c` directions are positively curved and random ones
flat: the summary table prints the medians over images per direction.

    python analyses/cross_sections.py                              # digits, lenet vs cnn2's S_c
    python analyses/cross_sections.py --dataset mnist --arch lenet --other-arch cnn2 --n 100
    python analyses/cross_sections.py --dataset fashion-mnist --arch lenet --n 100
    python analyses/cross_sections.py --quick                      # seconds, for CI

The study plumbing (flags, points, cache) is the one of every script of 001, in ``_common``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import _common as C
import numpy as np
import torch

from geomrob import BoundaryPoints, CrossSection, boundary_points, normal_section, sample_subspace
from geomrob.models import ARCHITECTURES
from geomrob.plotting import cross_section_figure, save_figure
from geomrob.theory import normal_section_curvature

# --------------------------------------------------------------------------------------------
# helpers


def first_converged(points: BoundaryPoints, k: int) -> list[int]:
    """The indices of the first ``k`` points whose boundary point converged.

    Args:
        points: boundary points.
        k: how many.

    Returns:
        Up to ``k`` indices, ascending.
    """
    return torch.nonzero(points.converged).flatten()[:k].tolist()


# --------------------------------------------------------------------------------------------
# readouts of a section


def crossing(b: np.ndarray, mu: np.ndarray) -> float:
    """Where ``mu`` first turns ``<= 0`` walking from ``b[0]`` (``mu[0] > 0``); NaN if never.

    Linear interpolation between the two grid points around the sign change.

    Args:
        b: ``(k,)`` increasing distances from the start.
        mu: ``(k,)`` the margin of x's class along them.

    Returns:
        The distance, or NaN when ``mu[0] <= 0`` or no sign change.
    """
    if mu[0] <= 0:
        return math.nan
    out = np.nonzero(mu <= 0)[0]
    if out.size == 0:
        return math.nan
    i = int(out[0])
    return float(b[i - 1] + (b[i] - b[i - 1]) * mu[i - 1] / (mu[i - 1] - mu[i]))


def along_v(section: CrossSection) -> tuple[float, float]:
    """Distances from ``x`` to the boundary of its region along ``+v`` and ``-v`` (grid, a = 0).

    Args:
        section: a cross-section whose ``a`` grid contains 0 (odd resolution).

    Returns:
        ``(plus, minus)``, NaN where the region extends beyond the grid.
    """
    a = section.a.cpu().double().numpy()
    b = section.b.cpu().double().numpy()
    i0, j0 = int(np.abs(a).argmin()), int(np.abs(b).argmin())
    mu = section.margin[i0].cpu().double().numpy()
    plus = crossing(b[j0:] - b[j0], mu[j0:])
    minus = crossing(b[j0] - b[: j0 + 1][::-1], mu[: j0 + 1][::-1])
    return plus, minus


def parabola_curvature(section: CrossSection, width: float) -> float:
    """``-2 c_2``: curvature of the boundary curve ``a*(b)`` of a section by a parabola fit.

    ``a*(b) = c_0 + c_1 b + c_2 b^2`` by least squares over the columns ``|b| <= width`` where
    the boundary of x's region meets the ``a`` axis; > 0 when it bends towards ``x``.

    Args:
        section: a normal section.
        width: half-width of the fit (input units).

    Returns:
        The curvature (1 / input units), NaN with fewer than 5 points on the curve.
    """
    b = section.b.cpu().double().numpy()
    a_star = section.boundary_distance().cpu().double().numpy()
    keep = np.isfinite(a_star) & (np.abs(b) <= width)
    if keep.sum() < 5:
        return math.nan
    c2 = np.polyfit(b[keep], a_star[keep], 2)[0]
    return float(-2.0 * c2)


# --------------------------------------------------------------------------------------------
# computation


def directions(
    st: C.Study, other: C.Study | None, m: int, gen: torch.Generator, d: int
) -> list[tuple[str, str, torch.Tensor]]:
    """``(key, title, v)`` of the panels of one image; random ones drawn anew per image.

    Args:
        st: the study of the network sectioned.
        other: the study of the other network (or ``None``).
        m: the dimension of the random vector of :math:`S_c`.
        gen: source of the random vectors.
        d: input dimension.

    Returns:
        The panels' keys, titles and flat ``(d,)`` float64 directions.
    """
    curved = st.result.curved
    m = min(m, curved.m)
    rand_sc = sample_subspace(curved.first(m), 1, 1.0, generator=gen)[0]
    rand = torch.randn(d, generator=gen, dtype=torch.float64)
    out = [
        ("uap", "v = UAP", st.result.uap),
        ("sc_top", "v = top of S_c", curved.basis[0]),
        ("sc_random", f"v random in S_c (m={m})", rand_sc),
        ("random", "v random in R^d", rand),
    ]
    if other is not None:
        out.append(("other_sc_top", f"v = top of S_c({other.arch})", other.result.curved.basis[0]))
    return [(k, t, v.detach().flatten().double().cpu()) for k, t, v in out]


def compute(args: argparse.Namespace, name: str) -> None:
    """Sections, their readouts and curvatures; saved as ``<name>.json`` / ``.npz``."""
    st = C.study(args)
    other = None if args.other_arch == "none" else C.study(args, args.other_arch)
    model, res = st.model, st.result
    x_all = st.x_eval
    pool = x_all[: max(4 * args.images, 20)]
    pts = boundary_points(model, pool)
    chosen = first_converged(pts, args.images)
    if not chosen:
        raise SystemExit("no test image among the first ones has a converged boundary point")
    gen = torch.Generator().manual_seed(args.seed)
    d = pool[0].numel()
    hvp = {k: v for k, v in res.config.hvp_options().items() if v is not None}
    images = []
    labels, margins, vs, grid_a, grid_b, us = [], [], [], [], [], []
    keys = titles = None
    for i in chosen:
        x = pool[i : i + 1]
        p_i = pts.select(torch.tensor([i], device=pts.converged.device))
        r_norm = float(p_i.r.flatten(1).norm())
        panels = directions(st, other, args.m, gen, d)
        keys, titles = [k for k, _, _ in panels], [t for _, t, _ in panels]
        V = torch.stack([v for _, _, v in panels]).to(x.device, x.dtype)
        curv = normal_section_curvature(model, p_i, V[None], mode=res.mode, **hvp)
        rows = []
        sec_row = []
        for j, (key, title, _) in enumerate(panels):
            s = normal_section(
                model, x, V[j], extent=args.extent * r_norm, resolution=args.resolution, points=p_i
            )
            plus, minus = along_v(s)
            sec = parabola_curvature(s, args.fit_width * r_norm)
            rows.append(
                {
                    "kind": key,
                    "title": title,
                    "cosine_with_r": s.cosine,
                    "dist_plus": C.finite_or_none(plus / r_norm),
                    "dist_minus": C.finite_or_none(minus / r_norm),
                    "section_curvature": C.finite_or_none(sec * r_norm),
                    "local_curvature": C.finite_or_none(float(curv.tangent[0, j]) * r_norm),
                    "local_kappa": C.finite_or_none(float(curv.kappa[0, j])),
                }
            )
            sec_row.append(s)
        images.append(
            {
                "index": i,
                "label": int(p_i.label[0]),
                "adv_label": int(p_i.adv_label[0]),
                "r_norm": r_norm,
                "origin_margin": sec_row[0].origin_margin,
                "panels": rows,
            }
        )
        labels.append(torch.stack([s.labels for s in sec_row]).to(torch.int16))
        margins.append(torch.stack([s.margin for s in sec_row]).float())
        vs.append(torch.stack([s.v for s in sec_row]).float())
        us.append(sec_row[0].u.float())
        grid_a.append(sec_row[0].a.double())
        grid_b.append(sec_row[0].b.double())
        for s in sec_row:  # every panel of an image shares the grid and u
            assert torch.equal(s.a, sec_row[0].a) and torch.equal(s.u, sec_row[0].u)
    arrays = {
        key: torch.stack(t).cpu().numpy()
        for key, t in (
            ("labels", labels),
            ("margin", margins),
            ("v", vs),
            ("u", us),
            ("a", grid_a),
            ("b", grid_b),
        )
    }
    summary = {}
    for j, key in enumerate(keys or []):
        col = [img["panels"][j] for img in images]

        def med(field: str, col=col) -> float | None:
            vals = [c[field] for c in col if c[field] is not None]
            return float(np.median(vals)) if vals else None

        summary[key] = {
            "title": (titles or [])[j],
            "median_section_curvature": med("section_curvature"),
            "median_local_curvature": med("local_curvature"),
            "reached_both_sides": float(
                np.mean([c["dist_plus"] is not None and c["dist_minus"] is not None for c in col])
            ),
            "median_dist_plus": med("dist_plus"),
            "median_dist_minus": med("dist_minus"),
        }
    results = {
        "dataset": args.dataset,
        "arch": args.arch,
        "other_arch": None if other is None else other.arch,
        "test_accuracy": st.test_accuracy,
        "other_test_accuracy": None if other is None else other.test_accuracy,
        "mode": res.mode,
        "study": {
            "n_fit": res.n_fit,
            "n_uap": res.n_uap,
            "n_eval": res.n_eval,
            "rho_rand": res.rho_rand,
            "norm": res.norm,
            "uap_rate": res.uap_rate,
        },
        "extent": args.extent,
        "resolution": args.resolution,
        "fit_width": args.fit_width,
        "keys": keys,
        "titles": titles,
        "images": images,
        "summary": summary,
    }
    C.save(name, args, results, arrays)


# --------------------------------------------------------------------------------------------
# figure and table from the saved file


def sections_from_arrays(record: dict, arrays: dict[str, np.ndarray]) -> list[CrossSection]:
    """Rebuild the :class:`~geomrob.CrossSection` of every panel (row-major: image, panel).

    Args:
        record: the saved JSON record.
        arrays: the saved npz arrays.

    Returns:
        One section per panel.
    """
    res = record["results"]
    out = []
    for i, img in enumerate(res["images"]):
        u = torch.from_numpy(arrays["u"][i]).double()
        for j, panel in enumerate(img["panels"]):
            out.append(
                CrossSection(
                    a=torch.from_numpy(arrays["a"][i]),
                    b=torch.from_numpy(arrays["b"][i]),
                    labels=torch.from_numpy(arrays["labels"][i, j].astype(np.int64)),
                    margin=torch.from_numpy(arrays["margin"][i, j]).double(),
                    u=u,
                    v=torch.from_numpy(arrays["v"][i, j]).double(),
                    origin_label=img["label"],
                    origin_margin=img["origin_margin"],
                    cosine=panel["cosine_with_r"],
                    normalized=True,
                    orthogonalized=True,
                    distance=img["r_norm"],
                    adv_label=img["adv_label"],
                )
            )
    return out


def _fmt(value: float | None, spec: str = "+.2f") -> str:
    return "-" if value is None else format(value, spec)


def plot(record: dict, arrays: dict[str, np.ndarray], path: Path) -> Path:
    """One row of panels per image, from the saved file; returns the PNG's path."""
    res = record["results"]
    sections = sections_from_arrays(record, arrays)
    titles = []
    for img in res["images"]:
        for panel in img["panels"]:
            titles.append(
                f"{panel['title']}\nsection curv. {_fmt(panel['section_curvature'])}, "
                f"local {_fmt(panel['local_curvature'])}"
            )
    fig = cross_section_figure(
        sections,
        titles=titles,
        ncols=len(res["keys"]),
        panel_size=2.6,
        title=f"Normal sections of {res['arch']} on {res['dataset']} (curvatures x ||r(x)||)",
    )
    return save_figure(fig, path)


def table(results: dict) -> str:
    """The per-direction medians as markdown."""
    lines = [
        "| direction v | section curvature | local curvature | boundary on both sides "
        "| dist +v / -v (x ||r||) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in results["keys"]:
        s = results["summary"][key]
        lines.append(
            f"| {s['title']} | {_fmt(s['median_section_curvature'])} | "
            f"{_fmt(s['median_local_curvature'])} | {s['reached_both_sides']:.2f} | "
            f"{_fmt(s['median_dist_plus'], '.2f')} / {_fmt(s['median_dist_minus'], '.2f')} |"
        )
    st = results["study"]
    return (
        "\n".join(lines)
        + f"\n\nmedians over {len(results['images'])} unseen images of {results['dataset']}, "
        f"{results['arch']} ({results['mode']} curvature), extent {results['extent']} ||r||; "
        f"UAP norm {st['norm']:.3f} (rho_rand / 5), its fooling rate {st['uap_rate']:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    p.add_argument(
        "--other-arch",
        default="cnn2",
        choices=(*ARCHITECTURES, "none"),
        help="the network whose S_c gives the last panel (001 Fig. 13); 'none' to skip",
    )
    p.add_argument("--images", type=int, default=3, help="unseen images (rows of the figure)")
    p.add_argument("--m", type=int, default=10, help="dimension of S_c for its random vector")
    p.add_argument("--extent", type=float, default=3.0, help="half-width of the grid / ||r(x)||")
    p.add_argument("--resolution", type=int, default=101, help="grid points per axis (odd)")
    p.add_argument(
        "--fit-width", type=float, default=2.0, help="half-width of the parabola fit / ||r(x)||"
    )
    args = C.parse_study_args(p, argv)
    C.check_positive_flags(p, args, "images", "m")
    if args.resolution < 3 or args.resolution % 2 == 0:
        p.error(f"--resolution must be odd and >= 3 (0 on the grid); got {args.resolution}.")
    if args.extent <= 0 or args.fit_width <= 0:
        p.error("--extent and --fit-width must be > 0.")
    if args.quick:
        args.images = min(args.images, 2)
        args.resolution = min(args.resolution, 41)
    C.setup(args)
    name = C.stem(args, "cross_sections")
    if not args.plot_only:
        compute(args, name)
    record, arrays = C.load(name, args)
    path = plot(record, arrays, Path(args.out) / f"{name}.png")
    print(table(record["results"]))
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
