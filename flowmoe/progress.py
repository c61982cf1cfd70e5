"""Progress of a job made of a few long stages: one tqdm bar on stderr, one step per stage.

``with stages.stage("fine-tune"): ...`` shows the stage's name while it runs and counts it as done
when it finishes; ``stages.done`` lists the finished ones (what an interrupted job can save).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


class Stages:
    def __init__(self, names, desc: str, enabled: bool = True):
        self.names, self.done = tuple(names), []
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(self.names), desc=desc, unit="stage", file=sys.stderr, leave=False)

    @contextmanager
    def stage(self, name: str):
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        yield
        self.done.append(name)
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
