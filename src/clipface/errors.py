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


class UsageError(ClipfaceError, ValueError):
    """A bad argument value, found before any work starts (the CLI exits with code 2).

    ``arg`` is the parameter's Python name (``batch_size``); the command line shows it as its
    flag (``--batch-size``).
    """

    def __init__(self, arg: str, value: object, problem: str) -> None:
        self.arg, self.value, self.problem = arg, value, problem
        super().__init__(f"{arg}={value!r}: {problem}")

    def as_flag(self, flag: str | None = None) -> str:
        """The message with the command-line flag in place of the Python name."""
        flag = flag or "--" + self.arg.replace("_", "-")
        value = self.value if isinstance(self.value, (int, float)) or self.value is None else repr(self.value)
        return f"{flag} {value}: {self.problem}"


def check_int(
    arg: str, value: int | None, low: int | None = None, high: int | None = None, allow_none: bool = True
) -> int | None:
    """``value`` if it is a whole number in ``[low, high]`` (``None`` allowed when ``allow_none``), else
    :class:`UsageError`."""
    if value is None:
        if allow_none:
            return None
        raise UsageError(arg, value, "a whole number is required")
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (hasattr(value, "__index__")):
        raise UsageError(arg, value, "must be a whole number")
    value = int(value)
    if low is not None and value < low:
        raise UsageError(arg, value, f"must be at least {low}")
    if high is not None and value > high:
        raise UsageError(arg, value, f"must be at most {high}")
    return value


def check_float(
    arg: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` if it lies in the interval (open or closed at each end), else :class:`UsageError`."""
    value = float(value)
    if value != value:
        raise UsageError(arg, value, "must be a number")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(arg, value, f"must be {'above' if low_open else 'at least'} {low:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(arg, value, f"must be {'below' if high_open else 'at most'} {high:g}")
    return value


def check_choice(arg: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """``value`` if it is one of ``choices``, else :class:`UsageError` naming them."""
    if value not in choices:
        raise UsageError(arg, value, f"choose one of {', '.join(choices)}")
    return value


class DatasetPathError(UsageError, DatasetError):
    """A dataset argument that names no folder (a usage error and a dataset error alike)."""
