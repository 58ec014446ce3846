"""One intra-op thread for small work.

Small tensors on several OpenMP threads gain nothing and, on a machine whose cores are busy,
the idle threads spin-wait: measured 8 ms instead of 0.01 ms for the QR of a 6 x 3 matrix,
133 s instead of 1.2 s for the Lipschitz bounds of a small MobileNet (8x8 inputs), and 1.6
instead of 125 images per second for the per-image DeepFool calls of the UAP algorithm on MNIST
LeNet, each with two threads on two loaded cores.
"""

from __future__ import annotations

import torch


class few_threads:  # noqa: N801 - used like torch.no_grad
    """Run the block on one intra-op thread when ``work <= limit``, then restore the count.

    Args:
        work: a measure of the block's size (elements of its largest tensor, say).
        limit: the size up to which one thread is used.
    """

    def __init__(self, work: int, limit: int = 2**18) -> None:
        self.small = work <= limit

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.small and self.threads > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
