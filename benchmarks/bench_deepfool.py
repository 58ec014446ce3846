"""DeepFool on MNIST/lenet: geomrob against torchattacks, foolbox and ART.

The same ``--n`` MNIST test images (the first ones of the test split) are attacked on the
``lenet`` that ``geomrob train`` builds by default for MNIST (taken from the run cache; trained
once, untimed). Every method attacks the model's *clean prediction* with the same settings:
overshoot 0.02, at most 50 iterations, 10 candidate classes (all of MNIST's classes). The peers
all keep their iterates in the pixel box [0, 1], so geomrob runs with ``bounds=(0, 1)`` for the
comparison; the row "geomrob (no box)" shows its default, unclipped mode for reference.

Per method: one untimed warm-up call on a few images, then ``--repeats`` timed calls on all
images at once (batched as far as the library allows); the median time is reported. Success
and norms are measured here, not taken from the libraries: the model is evaluated again on the
returned images; success means the prediction differs from the clean one, and ``||r||`` is
``||x_adv - x||_2`` over the successful images.

    python benchmarks/bench_deepfool.py --device cpu --n 256 --repeats 3

Peers that are not installed (or fail to import) are skipped with the reason. They are never
dependencies of geomrob; install them by hand to compare (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    environment,
    loadavg,
    markdown_table,
    median,
    save_json,
    synchronize,
    time_call,
    write_atomic,
)

from geomrob import data as gdata  # noqa: E402
from geomrob.attacks.deepfool import deepfool  # noqa: E402
from geomrob.models.training import TrainConfig, train  # noqa: E402

OVERSHOOT = 0.02
MAX_ITER = 50
CANDIDATES = 10
BOX = (0.0, 1.0)
PEERS = ("torchattacks", "foolbox", "art")
DISTS = {
    "torchattacks": ("torchattacks",),
    "foolbox": ("foolbox", "eagerpy"),
    "art": ("adversarial-robustness-toolbox",),
}
#: The model of ``geomrob train --dataset mnist`` with its defaults (see geomrob/cli.py).
TRAIN_CONFIG = TrainConfig(arch="lenet", dataset="mnist", epochs=5, lr=1e-3, batch_size=128, seed=0)

Attack = Callable[[Tensor, Tensor], Tensor]  # (x, clean label) -> x_adv (a torch tensor)


# ------------------------------------------------------------------------------- methods
def make_geomrob(model: nn.Module, device: torch.device, bounds, box_step: str = "clip") -> Attack:
    def attack(x: Tensor, label: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-converged images are counted below
            res = deepfool(
                model,
                x,
                overshoot=OVERSHOOT,
                max_iter=MAX_ITER,
                num_candidates=CANDIDATES,
                bounds=bounds,
                box_step=box_step,
            )
        return res.x_adv

    return attack


def make_torchattacks(model: nn.Module, device: torch.device) -> Attack:
    from torchattacks import DeepFool

    atk = DeepFool(model, steps=MAX_ITER, overshoot=OVERSHOOT)

    def attack(x: Tensor, label: Tensor) -> Tensor:
        return atk(x, label)

    return attack


def make_foolbox(model: nn.Module, device: torch.device) -> Attack:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=BOX, device=device)
    atk = fb.attacks.L2DeepFoolAttack(
        steps=MAX_ITER, candidates=CANDIDATES, overshoot=OVERSHOOT, loss="logits"
    )

    def attack(x: Tensor, label: Tensor) -> Tensor:
        raw, _, _ = atk(fmodel, x, fb.criteria.Misclassification(label), epsilons=None)
        return raw

    return attack


def make_art(model: nn.Module, device: torch.device) -> Attack:
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    logging.getLogger("art").setLevel(logging.ERROR)
    clf = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=BOX,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )

    def attack(x: Tensor, label: Tensor) -> Tensor:
        atk = DeepFool(
            clf,
            max_iter=MAX_ITER,
            epsilon=OVERSHOOT,
            nb_grads=CANDIDATES,
            batch_size=len(x),
            verbose=False,
        )
        out = atk.generate(x.detach().cpu().numpy())
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(device)

    return attack


MAKERS = {"torchattacks": make_torchattacks, "foolbox": make_foolbox, "art": make_art}

#: How each library's DeepFool differs from geomrob's (all with the settings above).
NOTES = {
    "geomrob": "whole batch, one forward and 9 batched backward passes per step; finished "
    "images leave the batch; overshoot on the total perturbation; iterates projected on [0, 1]",
    "geomrob (exact box step)": "same, but each step is the minimal-norm step to the "
    "linearised boundary inside [0, 1] (box_step='exact') instead of a clipped one",
    "geomrob (no box)": "same, without any clipping (geomrob's default)",
    "torchattacks": "one image at a time, one backward per class (all 10); overshoot applied to "
    "each step from the current iterate; clamp to [0, 1] every step",
    "foolbox": "whole batch, 9 forward+backward per step (one per candidate); finished images "
    "stay in the batch; overshoot on the total perturbation; clip to bounds",
    "art": "whole batch, class_gradient over all classes each step (one backward per class); "
    "iterates without overshoot, (1+epsilon) applied once at the end; clip to clip_values",
}


# ------------------------------------------------------------------------------- helpers
@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, x_adv: Tensor, label: Tensor) -> dict[str, Any]:
    x_adv = x_adv.to(x.device, x.dtype)
    adv_pred = model(x_adv).argmax(1)
    success = adv_pred != label
    norms = (x_adv - x).flatten(1).norm(dim=1)
    in_box = bool(((x_adv >= BOX[0]) & (x_adv <= BOX[1])).all())
    return {
        "success": success.cpu(),
        "norms": norms.cpu(),
        "success_rate": float(success.float().mean()),
        "n_success": int(success.sum()),
        "median_norm": float(norms[success].median()) if success.any() else float("nan"),
        "mean_norm": float(norms[success].mean()) if success.any() else float("nan"),
        "in_box": in_box,
    }


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, Any]:
    t0 = time.perf_counter()
    result = train(TRAIN_CONFIG, run_dir=args.run_dir, data_root=args.data_root, device=device)
    verb = "loaded from cache" if result.cached else f"trained in {time.perf_counter() - t0:.0f} s"
    print(f"lenet/mnist {verb}: test accuracy {result.test_accuracy:.4f} ({result.path})")
    model = result.model.to(device).eval()
    # Frozen parameters can only help the peers (otherwise their backward passes also fill
    # parameter gradients); geomrob's functional call detaches them anyway.
    model.requires_grad_(False)
    return model, result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--n", type=int, default=256, help="number of MNIST test images (the first)")
    p.add_argument(
        "--data-root",
        default=None,
        help="MNIST root (default $GEOMROB_DATA, else ../shared/data etc., see geomrob.data)",
    )
    p.add_argument("--run-dir", default="runs/bench", help="model cache (default runs/bench)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per method (median)")
    p.add_argument(
        "--budget",
        type=float,
        default=120.0,
        help="seconds per method after which no further timed call starts (default 120; "
        "a method slower than that is timed once)",
    )
    p.add_argument("--warmup", type=int, default=8, help="images in the untimed warm-up call")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON and table")
    p.add_argument(
        "--peers",
        nargs="*",
        default=list(PEERS),
        choices=PEERS,
        help="peer libraries to compare (skipped when not installed)",
    )
    p.add_argument("--no-unboxed", action="store_true", help="skip the 'geomrob (no box)' row")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: keep)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds torch and numpy (nothing is random)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    load_start = loadavg()

    model, trained = load_model(args, device)
    test = gdata.load("mnist", split="test", root=args.data_root)
    x = test.x[: args.n].to(device)
    y = test.y[: args.n].to(device)
    with torch.no_grad():
        label = model(x).argmax(1)
    n_correct = int((label == y).sum())
    print(
        f"{len(x)} MNIST test images, {n_correct} correctly classified; every method attacks "
        "the predicted label"
    )

    methods: dict[str, Callable[[], Attack]] = {
        "geomrob": partial(make_geomrob, model, device, BOX),
    }
    methods["geomrob (exact box step)"] = partial(make_geomrob, model, device, BOX, "exact")
    if not args.no_unboxed:
        methods["geomrob (no box)"] = partial(make_geomrob, model, device, None)
    skipped: dict[str, str] = {}
    for peer in args.peers:
        methods[peer] = partial(MAKERS[peer], model, device)

    env = environment(device, [d for p in args.peers for d in DISTS[p]])
    print(
        f"device {device}, torch threads {env['torch_threads']} "
        f"(interop {env['torch_interop_threads']}), cpu {env['cpu']} x{env['cpu_count']}, "
        f"load average {load_start}"
    )

    results: dict[str, dict[str, Any]] = {}
    for name, make in methods.items():
        try:
            attack = make()
        except Exception as exc:  # missing or broken optional peer: skip it with the reason
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"skipping {name}: {skipped[name]}")
            continue
        load_before = loadavg()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attack(x[: args.warmup], label[: args.warmup])  # warm-up, untimed
            x_adv, times = time_call(partial(attack, x, label), device, args.repeats, args.budget)
        synchronize(device)
        stats = evaluate(model, x, x_adv, label)
        results[name] = {
            "seconds": times,
            "seconds_median": median(times),
            "ms_per_image": 1e3 * median(times) / len(x),
            **{k: v for k, v in stats.items() if k not in ("success", "norms")},
            "norms": stats["norms"].tolist(),
            "succeeded": stats["success"].tolist(),
            "load_before": load_before,
            "load_after": loadavg(),
            "note": NOTES[name],
        }
        print(
            f"  {name:18s} {results[name]['ms_per_image']:9.3f} ms/image  "
            f"({len(times)} timed)  success {stats['success_rate']:.2%}  "
            f"median ||r|| {stats['median_norm']:.4f}  "
            f"load {load_before} -> {results[name]['load_after']}"
        )

    ref = results.get("geomrob")
    header = [
        "method",
        "ms / image",
        "success",
        "median ‖r‖₂",
        "time / ours",
        "median ours / theirs",
        "paired median ours / theirs",
    ]
    rows = []
    for name, res in results.items():
        time_ratio = norm_ratio = paired = float("nan")
        if ref is not None:
            time_ratio = res["seconds_median"] / ref["seconds_median"]
            norm_ratio = ref["median_norm"] / res["median_norm"]
            both = torch.tensor(ref["succeeded"]) & torch.tensor(res["succeeded"])
            if both.any():
                r_ours = torch.tensor(ref["norms"])[both]
                r_peer = torch.tensor(res["norms"])[both]
                paired = float((r_ours / r_peer).median())
        res.update(time_ratio=time_ratio, norm_ratio=norm_ratio, paired_norm_ratio=paired)
        rows.append(
            [
                name,
                f"{res['ms_per_image']:.3f}",
                f"{res['n_success']}/{len(x)}",
                f"{res['median_norm']:.4f}",
                f"{time_ratio:.1f}x",
                f"{norm_ratio:.4f}",
                f"{paired:.4f}",
            ]
        )
    table = markdown_table(header, rows)
    load_end = loadavg()
    caption = (
        f"DeepFool, lenet on the first {len(x)} MNIST test images ({n_correct} correctly "
        f"classified), overshoot {OVERSHOOT}, {MAX_ITER} iterations at most, {CANDIDATES} "
        f"candidate classes, box [0, 1]; device {device} ({env.get('device_name', env['cpu'])}), "
        f"{env['torch_threads']} torch threads, median of up to {args.repeats} timed runs "
        f"(one when a run takes over {args.budget:.0f} s); load "
        f"average {load_start} before, {load_end} after."
    )
    print()
    print(caption)
    print()
    print(table)
    for name, reason in skipped.items():
        print(f"\nskipped {name}: {reason}")

    out = Path(args.out)
    stem = f"deepfool_{device.type}"
    record = {
        "benchmark": "deepfool",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "args": vars(args),
        "settings": {
            "overshoot": OVERSHOOT,
            "max_iter": MAX_ITER,
            "candidates": CANDIDATES,
            "box": list(BOX),
            "n": len(x),
            "n_correct": n_correct,
            "params_frozen": True,
        },
        "model": trained.to_dict(),
        "environment": env,
        "load_start": load_start,
        "load_end": load_end,
        "results": results,
        "skipped": skipped,
        "table": table,
        "caption": caption,
    }
    save_json(record, out / f"{stem}.json")
    write_atomic(out / f"{stem}.md", caption + "\n\n" + table + "\n")
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
