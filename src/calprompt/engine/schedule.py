"""The learning-rate schedule of the prompt-tuning literature (Dassl's): a constant warm-up epoch, then cosine."""

from __future__ import annotations

import math

from calprompt._validation import check_non_negative, check_non_negative_int, check_positive_int, fail


def epoch_learning_rate(
    epoch: int, *, lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5
) -> float:
    """Learning rate of ``epoch`` (0-based).

    Warm-up epochs (counted inside ``epochs``) use the constant ``warmup_lr``; epoch ``e >= warmup_epochs`` uses
    ``lr * 0.5 * (1 + cos(pi * (e - warmup_epochs) / epochs))``. For MaPLe (E = 5, lr 0.0035) this gives 1e-5, 0.0035,
    0.003166, 0.002291, 0.001209.
    """
    check_positive_int(epochs, "epochs")
    check_non_negative(lr, "lr")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < epochs:
        fail("epoch", f"an integer in [0, {epochs})", epoch)
    check_non_negative_int(warmup_epochs, "warmup_epochs")
    if epoch < warmup_epochs:
        return float(warmup_lr)
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))
