"""Rich progress for a download: one overall bar plus one bar per active file (downloading, then verifying), fed
by the client's byte counts (through `ClientBar`, its ``tqdm_class``) and by the hashing threads."""

from __future__ import annotations

import threading
from pathlib import PurePosixPath
from typing import Any

from huggingface_hub.hf_api import RepoFile

from dalle3_etl.safetext import plain
from dalle3_etl.sources.hub.client import file_size


class DownloadTracker:
    """Rich progress for a download: one overall bar plus one bar per active file (download, then hashing)."""

    def __init__(self, enabled: bool, files: list[RepoFile], console=None):
        self.enabled = enabled
        self._lock = threading.Lock()
        self._sizes = {f.path: file_size(f) for f in files}
        self._counted = {f.path: 0 for f in files}
        self._tasks: dict[str, Any] = {}
        self._n = len(files)
        self._verified = 0
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(  # markup=False: descriptions hold file names from the Hub, printed as they are
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
            )
            self._overall = self.progress.add_task(self._overall_text(), total=sum(self._sizes.values()) or None)

    def _overall_text(self) -> str:
        return f"all files ({self._verified}/{self._n} verified)"

    def __enter__(self) -> DownloadTracker:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _task(self, name: str, what: str):
        if self.progress is None:
            return None
        label = f"{what} {plain(PurePosixPath(name).name)}"
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self.progress.add_task(label, total=self._sizes.get(name) or None)
        else:
            self.progress.update(task, description=label)
        return task

    def bar_class(self, name: str) -> type:
        tracker = self

        class Bar(ClientBar):
            def _advance(self, n: int) -> None:
                tracker.downloaded(name, n)

        return Bar

    def downloaded(self, name: str, n: int) -> None:
        with self._lock:
            self._counted[name] += n
            if self.progress is not None:
                self.progress.update(self._task(name, "downloading"), advance=n)
                self.progress.update(self._overall, advance=n)

    def fetched(self, name: str) -> None:
        """The download call returned: count bytes the client did not report (file already there)."""
        with self._lock:
            rest = self._sizes[name] - self._counted[name]
            self._counted[name] = self._sizes[name]
            if self.progress is not None and rest:
                self.progress.update(self._overall, advance=rest)

    def hashing(self, name: str) -> None:
        with self._lock:
            if self.progress is not None:
                self.progress.reset(self._task(name, "verifying"), total=self._sizes.get(name) or None)

    def hashed(self, name: str, n: int) -> None:
        if self.progress is not None:
            with self._lock:
                self.progress.update(self._tasks[name], advance=n)

    def finished(self, name: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._verified += 1
            if self.progress is not None:
                task = self._tasks.pop(name, None)
                if task is not None:
                    self.progress.remove_task(task)
                self.progress.update(self._overall, description=self._overall_text())


class ClientBar:
    """What the huggingface_hub client needs from a ``tqdm_class``; forwards byte counts to a `DownloadTracker`.

    Defines ``update_transfer`` so that Xet downloads report into this one bar instead of creating a second one.
    """

    def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any):
        self.n = initial
        self.total = total
        self.format_dict = {"rate": None}

    def _advance(self, n: int) -> None:  # overridden by `DownloadTracker.bar_class`
        pass

    def update(self, n: int | float | None = 1) -> None:
        if n:
            self.n += int(n)
            self._advance(int(n))

    def update_transfer(self, n: int | float | None = 1) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    set_transfer_postfix_str = set_postfix_str
    set_description = set_postfix_str

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> ClientBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["DownloadTracker", "ClientBar"]
