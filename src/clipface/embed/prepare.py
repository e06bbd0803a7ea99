"""Preparing images beside inference: threads, or processes where the front end holds Python's lock.

Decoding (PIL) and MTCNN (OpenCV) release Python's lock, so a thread pool keeps every core
busy. dlib's HOG detector, landmarks and ``get_face_chip`` hold it: in threads they run one at
a time, on one core. Their encoders' aligners say so (``holds_gil``), and their images are then
prepared in a pool of worker processes, one per physical core, each with its own copy of the
aligner, a few images per task; the main process embeds one batch while the workers prepare
the next ones. A worker runs exactly what :meth:`Encoder.prepare` runs (``aligner.crop(image,
image_size)`` on the image :func:`~clipface.data.images.load_image` decodes), so the
embeddings, and their cache keys, do not change.

``$CLIPFACE_PREP_PROCESSES`` sets the number of processes (``0``: threads only).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..data.dataset import FaceImage, SkippedFile
from ..data.images import load_image
from ..errors import ImageError
from ..models.backends.threads import physical_cores
from ..models.base import Aligner, Encoder

__all__ = ["ENV_VAR", "PROCESS_MIN_IMAGES", "Preparer", "inference_threads", "prepare_one", "process_count"]

ENV_VAR = "CLIPFACE_PREP_PROCESSES"
#: Fewest images to prepare for which worker processes are started (starting them costs about a second).
PROCESS_MIN_IMAGES = 64
#: Images per task sent to a worker process.
CHUNK = 8

Prepared = np.ndarray | SkippedFile
#: Worker processes are forked where the platform can (Linux): a spawned worker imports the main module
#: again, which runs a user's unguarded script a second time. A forked worker calls only dlib, PIL and
#: numpy, never torch, so torch's threads in the parent do not matter to it.
_START_METHOD = "fork" if sys.platform == "linux" else "spawn"


def prepare_one(encoder: Encoder, image: FaceImage) -> Prepared:
    """The prepared crop, or why the file cannot be used (only image and face-detection problems are skips:
    any other exception is a bug and propagates, after the batches before it were cached)."""
    try:
        return encoder.prepare(load_image(image.path))
    except ImageError as exc:
        return SkippedFile(str(image.path), exc.reason)


# -- worker processes -------------------------------------------------------------------------------
_worker_aligner: Aligner | None = None


def _init_worker(aligner: Aligner) -> None:
    global _worker_aligner
    _worker_aligner = aligner
    # a worker prepares images only: no inference library should start threads of its own here
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _prepare_chunk(paths: Sequence[str], size: int) -> list[Prepared]:
    assert _worker_aligner is not None
    out: list[Prepared] = []
    for path in paths:
        try:
            out.append(_worker_aligner.crop(load_image(path), size))
        except ImageError as exc:  # converted here: ImageError's own arguments do not survive pickling
            out.append(SkippedFile(str(path), exc.reason))
    return out


def process_count(encoder: Encoder, n_images: int, processes: int | None = None) -> int:
    """Worker processes for preparing ``n_images`` with ``encoder`` (0: threads).

    ``processes`` (or ``$CLIPFACE_PREP_PROCESSES``) if given, else the physical cores when the
    encoder's front end holds Python's lock, there are at least :data:`PROCESS_MIN_IMAGES` images
    and more than one core.
    """
    if not getattr(encoder.aligner, "holds_gil", False):
        return 0
    if processes is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            try:
                processes = max(0, int(env))
            except ValueError:
                raise ValueError(f"{ENV_VAR} must be a whole number of processes, not {env!r}") from None
    if processes is not None:
        return processes if n_images else 0
    cores = physical_cores()
    return cores if cores > 1 and n_images >= PROCESS_MIN_IMAGES else 0


class Preparer:
    """Prepares batches of images ahead of inference, in threads or worker processes."""

    def __init__(self, encoder: Encoder, threads: Executor, processes: int = 0) -> None:
        self.encoder = encoder
        self.threads = threads
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        if processes:
            ctx = multiprocessing.get_context(_START_METHOD)
            self._pool = ProcessPoolExecutor(
                processes, mp_context=ctx, initializer=_init_worker, initargs=(encoder.aligner,)
            )

    def submit(self, images: Sequence[FaceImage]) -> list[Future[Any]]:
        """Start preparing ``images``; :meth:`collect` gives the results in order."""
        if self._pool is None:
            return [self.threads.submit(prepare_one, self.encoder, im) for im in images]
        paths = [str(im.path) for im in images]
        size = self.encoder.image_size
        return [self._pool.submit(_prepare_chunk, paths[i : i + CHUNK], size) for i in range(0, len(paths), CHUNK)]

    def collect(self, futures: list[Future[Any]]) -> list[Prepared]:
        if self._pool is None:
            return [f.result() for f in futures]
        return [p for f in futures for p in f.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def inference_threads(prep: Preparer) -> Iterator[None]:
    """While worker processes prepare images, torch runs on the cores they leave (at least one thread).

    Torch's threads wait for each other at every operator: on a core a worker process also uses,
    they stall (measured on 2 cores: 2 threads beside a busy core ran 4x slower than 1 thread).
    ``$CLIPFACE_THREADS`` still decides where it is set.
    """
    torch = sys.modules.get("torch")
    if not prep.processes or torch is None or os.environ.get("CLIPFACE_THREADS", "").strip():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, physical_cores() - prep.processes))
    try:
        yield
    finally:
        torch.set_num_threads(before)
