"""Progress bars on the terminal for the library's stages."""

from __future__ import annotations

from types import TracebackType

from tqdm import tqdm


class BarProgress:
    """One tqdm bar per stage; silent when ``enabled`` is false."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def stage(self, name: str, total: int) -> None:
        self.close()
        self._bar = tqdm(total=total, unit="file", desc=name, disable=not self.enabled)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> BarProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
