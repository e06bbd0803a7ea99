"""User-facing errors: each message is one line naming the input and the problem."""

from __future__ import annotations


class ClipfaceError(Exception):
    """Base class of errors that the CLI prints as a single line, without a traceback."""


class ModelNotFoundError(ClipfaceError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(ClipfaceError):
    """A registered model whose weights cannot be found or downloaded."""


class BackendUnavailableError(ClipfaceError):
    """An optional dependency (dlib, open_clip, onnxruntime, faiss...) is not installed."""


class DatasetError(ClipfaceError):
    """A dataset folder that cannot be used (missing, empty, wrong layout)."""


class ImageError(ClipfaceError):
    """An image file that cannot be used: unreadable, truncated, not an image, too large."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NoFaceError(ImageError):
    """An image in which the face detector found no face."""
