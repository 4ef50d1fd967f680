"""What `bnsweep train` shows on a terminal while an epoch runs: a bar over its training
images, then one over its validation images (10,000 by default: about 95 s at width 1 on
a CPU, which a bar stuck at 100 % made look hung).

The bar's images/s and the epoch line's (cli._fmt_epoch) are one measure, named alike
("train img/s"): training images done over the seconds since the epoch began, the clock
train() starts before its first step (the bar reads it through on_epoch_start). tqdm's
own rate is not used: it is a moving average that starts at the bar's first update,
after the first step, so it read 46-135 where the epoch line read 27-30 (issue 21).
"""

from __future__ import annotations

import time


class EpochBar:
    """train()'s hooks (on_epoch_start, on_step, on_validate) drawn as tqdm bars. The loss is
    read (a wait for the GPU) only when the bar redraws, about twice a second."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} img [{elapsed}<{remaining}{postfix}]"

    def __init__(self, batch_size: int, epochs: int, n_train: int = 0):
        self.batch_size, self.epochs, self.n_train = batch_size, epochs, n_train  # n_train: the caller's, by epoch 1
        self.bar, self.epoch, self.started, self.shown = None, 0, 0.0, 0.0

    def _open(self, what: str, total: int):
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                        desc=f"epoch {self.epoch}/{self.epochs} {what}", bar_format=self.FORMAT)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.started, self.shown = epoch, time.perf_counter(), 0.0
        self._open("train", self.n_train)

    def on_step(self, step: int, steps: int, loss) -> None:
        done = min(step * self.batch_size, self.n_train)
        self.bar.update(done - self.bar.n)
        now = time.perf_counter()
        if now - self.shown > 0.5 or step == steps:
            rate = done / max(now - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} train img/s, loss {loss.item():.4f}", refresh=False)
            self.shown = now
        if step == steps:  # drawn at 100 % before it is cleared (tqdm redraws at most every 0.1 s)
            self.bar.refresh()

    def on_validate(self, done: int, total: int) -> None:
        if done == 0:
            self._open("validate", total)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
