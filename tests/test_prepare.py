"""Preparing images in worker processes (dlib's front end holds Python's lock): same results as threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipface.data.dataset import FaceImage
from clipface.embed.pipeline import embed_images
from clipface.embed.prepare import PROCESS_MIN_IMAGES, process_count
from clipface.models.dlib_resnet import availability

ROOT = Path(__file__).resolve().parents[1]
LFW_MINI = ROOT / "src/clipface/data/bundled/lfw-mini"
DLIB_OK, DLIB_WHY = availability()


def test_processes_only_for_front_ends_that_hold_the_lock(monkeypatch: pytest.MonkeyPatch):
    class Holder:
        holds_gil = True

    class Fake:
        aligner = Holder()

    class Clip:
        aligner = None  # CLIP's resize and centre crop release the lock: threads

    monkeypatch.delenv("CLIPFACE_PREP_PROCESSES", raising=False)
    assert process_count(Clip(), 10_000) == 0 and process_count(Clip(), 10_000, processes=3) == 0

    monkeypatch.setattr("clipface.embed.prepare.physical_cores", lambda: 2)
    assert process_count(Fake(), PROCESS_MIN_IMAGES) == 2 and process_count(Fake(), PROCESS_MIN_IMAGES - 1) == 0
    assert process_count(Fake(), 5, processes=3) == 3 and process_count(Fake(), 0, processes=3) == 0
    monkeypatch.setattr("clipface.embed.prepare.physical_cores", lambda: 1)
    assert process_count(Fake(), 10_000) == 0  # one core: nothing to gain
    monkeypatch.setenv("CLIPFACE_PREP_PROCESSES", "0")
    monkeypatch.setattr("clipface.embed.prepare.physical_cores", lambda: 2)
    assert process_count(Fake(), 10_000) == 0
    monkeypatch.setenv("CLIPFACE_PREP_PROCESSES", "x")
    with pytest.raises(ValueError, match="CLIPFACE_PREP_PROCESSES"):
        process_count(Fake(), 10_000)


@pytest.mark.skipif(not DLIB_OK, reason=DLIB_WHY)
def test_worker_processes_give_the_same_embeddings_and_skips_as_threads(tmp_path: Path):
    import torch

    from clipface.models.runtime import LoadOptions, load_encoder

    files = sorted(LFW_MINI.glob("*/*_000[1-2].jpg"))[:6]
    (tmp_path / "Nobody").mkdir()
    (tmp_path / "Nobody" / "broken.jpg").write_text("not an image")
    images = [FaceImage(f, f.parent.name) for f in files] + [FaceImage(tmp_path / "Nobody" / "broken.jpg", "Nobody")]
    encoder = load_encoder("dlib", LoadOptions(flip=True))
    threads = torch.get_num_threads()
    by_threads = embed_images(encoder, images, None, batch_size=4, progress=False, processes=0)
    by_processes = embed_images(encoder, images, None, batch_size=4, progress=False, processes=2)
    assert torch.get_num_threads() == threads  # restored after the run
    assert [im.path for im in by_processes.images] == [im.path for im in by_threads.images] == files
    np.testing.assert_array_equal(by_processes.embeddings, by_threads.embeddings)
    assert [s.path for s in by_processes.skipped] == [s.path for s in by_threads.skipped] == [str(images[-1].path)]
    assert by_processes.skipped[0].reason == by_threads.skipped[0].reason
