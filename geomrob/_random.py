"""Random-number helpers: every random choice in geomrob goes through an explicit generator."""

from __future__ import annotations

import torch


def as_generator(
    seed: int | torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    """Normalise a seed argument, like scikit-learn's ``check_random_state``.

    ``None`` and generators are returned as they are; an ``int`` seeds a new generator on
    ``device``.

    Example:
        >>> g = as_generator(0)
        >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=as_generator(0)).item()
        True
    """
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return torch.Generator(device=device).manual_seed(seed)
    raise TypeError(f"`seed` must be None, an int or a torch.Generator; got {seed!r}.")


def randn(*shape: int, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal draws on ``device``, taken from the generator's own device.

    Drawing on the generator's device and moving the result keeps CPU and GPU runs identical
    when the caller passes a CPU generator.
    """
    gen_device = generator.device if generator is not None else device
    return torch.randn(*shape, generator=generator, device=gen_device, dtype=dtype).to(device)
