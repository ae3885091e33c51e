"""Learning-rate schedules of :class:`cprl_fast.train.TrainConfig` (``schedule``), as pure
functions of the iteration, so that a resumed run continues the same curve with nothing saved.

``onecycle`` is torch's :class:`torch.optim.lr_scheduler.OneCycleLR` with its defaults
(Smith and Topin 2019; ``pct_start`` 0.1 here): the learning rate rises from ``lr / 25`` to
``lr`` over the first tenth of the steps and falls to ``lr / 25e4`` by the last, both on cosine
curves, while Adam's ``beta1`` moves the other way between 0.95 and 0.85. The tests hold it to
torch's scheduler step by step (at ``total`` = 10, where torch divides by zero, the first
iteration is the peak).
"""

from __future__ import annotations

import math

PCT_START = 0.1
DIV_FACTOR = 25.0
FINAL_DIV_FACTOR = 1e4
BETA1 = (0.85, 0.95)  #: (at the peak learning rate, at the ends)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle(step: int, total: int, lr: float) -> tuple[float, float]:
    """The learning rate and Adam's ``beta1`` of iteration ``step`` (0-based, the number of
    iterations done before it) of a ``total``-iteration run peaking at ``lr``."""
    if total < 2:
        return lr, BETA1[0]
    initial = lr / DIV_FACTOR
    low, high = BETA1
    warm = float(PCT_START * total) - 1
    if step <= warm or warm == 0 == step:  # (torch divides by zero at total = 10)
        pct = step / warm if warm else 1.0
        return _cos(initial, lr, pct), _cos(high, low, pct)
    pct = (step - warm) / (total - 1 - warm)
    return _cos(lr, initial / FINAL_DIV_FACTOR, pct), _cos(low, high, pct)
