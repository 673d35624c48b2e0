"""How long work tells whoever runs it how far it has come.

The library reports stages and counts; the command line draws a bar, a service or the API
records the counts with its job. Nothing here prints.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str, total: int) -> None:
        """A stage of ``total`` items begins (the previous one, if any, is over)."""

    def advance(self, count: int = 1) -> None:
        """``count`` more items of the current stage are done."""


class NoProgress:
    """Progress nobody watches."""

    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass
