"""The page's views: ``explain.views`` draws them (the one pipeline, shared with ``python -m explain``); here the
server's side of them, the download folders.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path

from explain.controls import COLORMAPS
from explain.views import (View, ViewParams, before_after, crop_picture, draw_outlines_with_halo, render, render_view,
                           unavailable_picture)

__all__ = ["COLORMAPS", "DownloadFolders", "View", "ViewParams", "before_after", "crop_picture",
           "draw_outlines_with_halo", "render", "render_view", "unavailable_picture"]


class DownloadFolders:
    """Fresh folders for a view's downloads (``appcore.exports.write_downloads``); only the newest ``keep``
    stay on disk, and all of them go when the process ends.

    The web server copies a download into its own cache when it answers, so a folder is needed only until
    then: a server that prepares downloads all day must not keep every one of them.
    """

    def __init__(self, keep: int = 32, root: str | Path | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self._temporary = None if root is not None else tempfile.TemporaryDirectory(prefix="fundus-cam-zoo-downloads-")
        self.root = Path(root) if root is not None else Path(self._temporary.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()

    def new(self) -> Path:
        """A new empty folder; the oldest beyond ``keep`` are deleted."""
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            old = [self._folders.popleft() for _ in range(len(self._folders) - self.keep)]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def __len__(self) -> int:
        return len(self._folders)
