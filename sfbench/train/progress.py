"""Progress output: a tqdm bar on a terminal, plain periodic log lines otherwise (Slurm logs, pipes)."""

from __future__ import annotations

import sys
import time

from ..terminal import tqdm_width_options


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every `every_s` seconds (Slurm logs)."""

    def __init__(self, total: int, start: int, every_s: float, desc: str, enabled: bool = True):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.every_s, self.last, self.t0, self.start, self.total = every_s, time.time(), time.time(), start, total
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, file=sys.stderr, unit="step",
                            **tqdm_width_options())

    def update(self, step: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step % 5 == 0 or step == self.total:
                self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
        elif time.time() - self.last >= self.every_s or step == self.total:
            done = step - self.start
            rate = done / max(time.time() - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            print(f"sfbench: step {step}/{self.total} loss {loss:.4f} lr {lr:.3g} {rate:.2f} steps/s "
                  f"eta {eta:.0f} s", file=sys.stderr, flush=True)
            self.last = time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
