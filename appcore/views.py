"""The page's views: ``explain.views`` draws them (the one pipeline, shared with ``python -m explain``); here the
server's side of them, the download folders and the picture files.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
from PIL import Image

from explain.controls import COLORMAPS
from explain.views import (View, ViewParams, before_after, crop_picture, draw_outlines_with_halo, render, render_view,
                           unavailable_picture)

__all__ = ["COLORMAPS", "DownloadFolders", "PictureFiles", "View", "ViewParams", "before_after", "crop_picture",
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


class PictureFiles:
    """Each picture of a result as a file named by its content, written once and never rewritten, for a web server
    to serve.

    Handed a picture as an array, Gradio encodes it and writes it to a path named by its content, rewriting that
    file in place whenever another request makes the same picture (the same example photo on two pages): a
    transfer of the file in progress then finds it shorter than the size it announced ("Too little data for
    declared Content-Length"). Handed a file, Gradio copies it into its cache once, under a temporary name renamed
    into place, and serves that copy unchanged. So every picture becomes a file here (JPEG, as Gradio would encode
    it), complete before its name appears, and a picture made again (the photo of the before/after view at every
    slider move, a panel shown twice, a θ seen before) is the same file: not encoded again, and the same address
    in Gradio's cache, which a browser does not fetch again. Only the newest ``keep`` stay on disk (Gradio has
    copied them by then), all go at exit.
    """

    def __init__(self, keep: int = 512, root: str | Path | None = None, format: str = "jpeg") -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep, self.format = keep, format
        # In the system's temp folder: Gradio serves output files from there (as the downloads).
        self._temporary = None if root is not None else tempfile.TemporaryDirectory(prefix="fundus-cam-zoo-pictures-")
        self.root = Path(root) if root is not None else Path(self._temporary.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._files: OrderedDict[str, Path] = OrderedDict()  # by content, oldest first; made again: last
        self._lock = threading.Lock()

    def save(self, picture: np.ndarray, name: str = "picture") -> str:
        """The file holding the picture ((H, W, 3) or (H, W) uint8), complete before its path is returned; the
        same pixels give the same file (named after the ``name`` that made it first), written once."""
        picture = np.ascontiguousarray(picture, dtype=np.uint8)
        digest = hashlib.blake2b(picture.data, digest_size=16)
        digest.update(repr(picture.shape).encode())
        key = digest.hexdigest()
        with self._lock:
            if key in self._files:  # on disk until ``keep`` newer pictures push it out
                self._files.move_to_end(key)
                return str(self._files[key])
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, self.format)
        fd, staging = tempfile.mkstemp(dir=self.root, prefix=f".{name}-", suffix=f".{self.format}")
        with os.fdopen(fd, "wb") as file:
            file.write(buffer.getvalue())
        with self._lock:  # renamed into place and listed at once: never deleted in between
            if key in self._files:  # made by another request meanwhile: that file stays as it is
                os.unlink(staging)
                self._files.move_to_end(key)
                return str(self._files[key])
            path = self._files[key] = self.root / f"{name}-{key}.{self.format}"
            os.replace(staging, path)
            while len(self._files) > self.keep:
                self._files.popitem(last=False)[1].unlink(missing_ok=True)
        return str(path)

    def __len__(self) -> int:
        return len(self._files)
