"""dlib's ResNet in PyTorch: the reader, parity with dlib's own network, cache keys, damaged files, the cloak view."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipface.errors import BackendUnavailableError, WeightsUnavailableError
from clipface.models.dlib_resnet import DlibEncoder, availability
from clipface.models.dlib_torch.serial import DlibFormatError, Reader
from clipface.models.registry import create_encoder

from .cloak_checks import mean_similarity, noise_at_dssim, rgb_of, shift

ROOT = Path(__file__).resolve().parents[1]
LFW_MINI = ROOT / "src/clipface/data/bundled/lfw-mini"
PHOTOS = [("Tony_Blair", 1), ("Colin_Powell", 2), ("Hugo_Chavez", 1), ("Vladimir_Putin", 3), ("Ariel_Sharon", 1)]
DLIB_OK, DLIB_WHY = availability()
pytestmark = pytest.mark.skipif(not DLIB_OK, reason=DLIB_WHY)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread."""


@pytest.fixture(scope="module")
def dat() -> Path:
    from clipface.models.dlib_resnet import default_model_path

    return default_model_path()


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """LFW face chips made now by dlib itself (HOG detector, 5 landmarks, get_face_chip)."""
    from clipface.models.align import DlibAligner

    aligner = DlibAligner()
    return np.stack([aligner.crop(Image.open(LFW_MINI / p / f"{p}_{i:04d}.jpg"), 150) for p, i in PHOTOS])


def photo(person: str = "Tony_Blair", index: int = 1) -> Image.Image:
    return Image.open(LFW_MINI / person / f"{person}_{index:04d}.jpg").convert("RGB")


# -- serialisation primitives -------------------------------------------------------------------
def test_integers_floats_and_bools_decode_as_dlib_writes_them():
    # 300 = 0x012c: control byte = payload size 2, little-endian; -5: sign bit 0x80 on the control byte
    r = Reader(bytes([0x02, 0x2C, 0x01, 0x81, 0x05, ord("1"), ord("0")]))
    assert (r.int_("int"), r.int_("long"), r.bool_(), r.bool_()) == (300, -5, True, False)
    # 0.75 = 3 * 2^-2: mantissa 3 (int64), exponent -2 (int16)
    assert Reader(bytes([0x01, 0x03, 0x81, 0x02])).float_("double") == 0.75
    assert Reader(bytes([0x01, 0x00, 0x02, 0x00, 0x7D])).float_("double") == float("inf")  # exponent 32000
    with pytest.raises(DlibFormatError, match="sign bit set on an unsigned type"):
        Reader(bytes([0x81, 0x05])).int_("unsigned long")
    with pytest.raises(DlibFormatError, match=r"at byte offset 0 .*payload size 5 not in 1\.\.4"):
        Reader(bytes([0x05, 1, 2, 3, 4, 5])).int_("int")
    with pytest.raises(DlibFormatError, match="bool must be the ASCII byte"):
        Reader(b"\x01").bool_()


def test_the_whole_file_parses_to_the_network(dat: Path):
    from clipface.models.dlib_torch.dat_file import parse_file

    net = parse_file(dat)
    assert net.file_size == dat.stat().st_size and net.n_params() == 5_614_592
    assert len(net.layers) == 131 and net.loss["version"] == "loss_metric_2"
    assert net.layers[0].ltype == "fc_" and net.input.info["NR"] == 150
    kinds = [layer.ltype for layer in net.computational()]
    assert kinds.count("con_") == 29 and kinds.count("affine_") == 29 and kinds.count("add_prev_") == 14
    assert net.input.info["avg_red"] == pytest.approx(122.782, abs=1e-4)


# -- damaged files: the part and the byte offset ------------------------------------------------
def damaged(dat: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "damaged.dat"
    out.write_bytes(edit(bytearray(dat.read_bytes())))
    return out


def test_truncated_file_names_the_layer_tensor_and_offset(dat: Path, tmp_path: Path):
    from clipface.models.dlib_torch.dat_file import parse_file

    bad = damaged(dat, tmp_path, lambda b: b[:10_000_000])
    with pytest.raises(DlibFormatError) as info:
        parse_file(bad)
    msg = str(info.value)
    assert str(bad) in msg and "at byte offset" in msg and "truncated file" in msg
    assert "con_ details > resizable_tensor" in msg and "layer<" in msg
    assert 0 < info.value.offset < 10_000_000


@pytest.mark.parametrize(
    "what, edit, expected",
    [
        ("wrong layer tag", lambda b: b.replace(b"con_4", b"con_9", 1), "expected con_ version"),
        ("wrapper version", lambda b: b[:29] + b"\x01\x05" + b[31:], "add_layer<fc_> version"),
        ("trailing bytes", lambda b: b + b"\x00\x00", "2 unread byte(s) after the network"),
        ("bzip2", lambda b: b"BZh9" + b, "bzip2-compressed"),
        ("old float format", lambda b: b[:17] + b"0" + b[18:], "old ASCII float format"),
    ],
)
def test_corrupt_file_says_which_part_and_why(dat: Path, tmp_path: Path, what, edit, expected):
    from clipface.models.dlib_torch.dat_file import parse_file

    with pytest.raises(DlibFormatError, match="at byte offset") as info:
        parse_file(damaged(dat, tmp_path, edit))
    assert expected in str(info.value), what


def test_loading_a_damaged_file_is_a_one_line_weights_error(dat: Path, tmp_path: Path):
    from clipface.models.dlib_torch.encoder import load

    bad = damaged(dat, tmp_path, lambda b: b[:5_000_000])
    with pytest.raises(WeightsUnavailableError, match="byte offset"):
        load(None, weights=bad, aligner=None)


# -- parity with dlib's own network ------------------------------------------------------------
def test_descriptors_match_dlib_compute_face_descriptor(chips: np.ndarray, dat: Path):
    import dlib

    from clipface.models.dlib_torch.encoder import load

    reference = np.array(dlib.face_recognition_model_v1(str(dat)).compute_face_descriptor(list(chips), 0))
    encoder = load(None, aligner=None)
    with torch.no_grad():
        raw = encoder.module(torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0).double().numpy()
    cosine = (raw * reference).sum(1) / np.linalg.norm(raw, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999
    assert np.abs(raw - reference).max() < 1e-5  # 5e-7 measured; /255 instead of /256 would give 4e-4
    assert np.linalg.norm(reference, axis=1).min() > 1.0  # raw descriptors, not normalised
    native = DlibEncoder(dat, None).encode_prepared(chips)
    np.testing.assert_allclose(encoder.encode_prepared(chips), native, atol=1e-5)


def test_embeddings_are_differentiable_from_pixels(chips: np.ndarray):
    from clipface.models.dlib_torch.encoder import load

    encoder = load(None, aligner=None)
    x = (torch.from_numpy(chips[:2]).permute(0, 3, 1, 2).float() / 255.0).requires_grad_(True)
    emb = encoder.embed_pixels(x)
    (emb[0] @ emb[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    np.testing.assert_allclose(emb.detach().numpy(), encoder.encode_prepared(chips[:2]), atol=1e-6)


# -- registry, backends, cache keys ------------------------------------------------------------
def test_dlib_defaults_to_the_port_and_shares_dlibs_cache_keys(dat: Path):
    from clipface.models.backends.select import with_backend
    from clipface.models.dlib_torch.encoder import DlibTorchEncoder
    from clipface.models.runtime import LoadOptions, load_encoder

    port = load_encoder("dlib", LoadOptions(flip=True))
    native = load_encoder("dlib", LoadOptions(backend="dlib", flip=True))
    assert isinstance(port, DlibTorchEncoder) and isinstance(native, DlibEncoder)
    assert (port.fingerprint, port.preprocess_id) == (native.fingerprint, native.preprocess_id)
    assert native.flip and port.info()["backend"] == "torch"
    with pytest.raises(BackendUnavailableError, match="only the dlib model"):
        with_backend(native, "dlib")  # dlib's own network has no other backend to switch to


def test_conversion_is_cached_as_safetensors_and_loads_back(dat: Path, tmp_path: Path):
    from safetensors.torch import save_file

    from clipface.files import cache_root
    from clipface.models.dlib_torch.convert import cache_file
    from clipface.models.dlib_torch.encoder import load

    first = load(None, aligner=None)
    converted = cache_file(first.fingerprint)
    assert converted.is_file() and converted.parent == cache_root() / "weights"
    mtime = converted.stat().st_mtime_ns
    again = load(None, aligner=None)
    assert converted.stat().st_mtime_ns == mtime and again.fingerprint == first.fingerprint
    direct = load(None, weights=converted, aligner=None)
    assert direct.fingerprint == first.fingerprint and direct.model_path is None
    anonymous = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in first.module.state_dict().items()}, str(anonymous))
    with pytest.raises(WeightsUnavailableError, match="no source_sha256"):
        load(None, weights=anonymous, aligner=None)
    assert isinstance(load(None, num_jitters=1, aligner=None), DlibEncoder)  # jittering is dlib's own


# -- the cloak's copy of get_face_chip -----------------------------------------------------------
@pytest.mark.parametrize("scale", [1, 3])  # 3x: the face is over twice the chip's side, dlib uses its pyramid
def test_chip_view_reproduces_get_face_chip(scale: int):
    from clipface.cloak.views import to_tensor, view_for
    from clipface.models.dlib_torch.encoder import load

    encoder = load(None)
    levels = set()
    for person, index in PHOTOS[:3]:
        image = photo(person, index)
        image = image.resize((250 * scale, 250 * scale), Image.BICUBIC) if scale > 1 else image
        view = view_for(encoder, image)  # checks it against encoder.prepare within VIEW_TOLERANCE
        levels.add(view.chip.levels)
        with torch.no_grad():
            mine = view(to_tensor(np.asarray(image))[None])[0].permute(1, 2, 0).numpy() * 255.0
        gap = np.abs(mine - encoder.prepare(image).astype(np.float32))
        assert gap.mean() < 1.2 and np.percentile(gap, 99) < 2.5  # dlib rounds to 8 bits; the view does not
    assert (max(levels) >= 1) == (scale == 3)


def test_chip_view_jitter_moves_the_chip():
    from clipface.cloak.views import to_tensor, view_for
    from clipface.models.dlib_torch.encoder import load

    image = photo()
    view = view_for(load(None), image)
    x = to_tensor(np.asarray(image))[None]
    gen = torch.Generator().manual_seed(0)
    moved = [view.jittered(4, gen, image.width, image.height) for _ in range(5)]
    assert all(m.chip is not None and m.box == view.box for m in moved)
    gaps = [float((m(x) - view(x)).abs().mean()) * 255 for m in moved]
    assert max(gaps) > 1.0 and min(gaps) < 40  # moved a little, still the face
    assert view.jittered(0, gen, image.width, image.height) is view


@pytest.mark.parametrize("method", ["fawkes", "lowkey"])
def test_cloak_with_dlib_as_surrogate(tmp_path: Path, method: str):
    from clipface.cli import app

    src = tmp_path / "in"
    for person, index in PHOTOS[:2]:
        (src / person).mkdir(parents=True)
        photo(person, index).save(src / person / f"{person}_{index:04d}.jpg")
    out = tmp_path / "out"
    args = ["cloak", "--surrogate", "dlib", "--method", method, "--mode", "high", "--steps", "10", "--jitter", "2"]
    res = CliRunner().invoke(app, [*args, "--in", str(src), "--out", str(out), "-q", "--no-cache", "--threads", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "cloak_summary.json").read_text())
    assert summary["n_cloaks"] == 2 and summary["within_budget"] and summary["surrogates"] == ["dlib"]
    records = [json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "cloak_summary.json"]
    assert len(records) == 2 and all(r["feature_shift"]["dlib"] is not None for r in records)
    encoder = create_encoder("dlib")
    for r in records:
        original, cloak = rgb_of(r["source"]), rgb_of(r["cloak"])
        if method == "fawkes":  # toward the target, away from the person's other photos
            sim = r["target_similarity"]["dlib"]
            assert sim["cloak"] > sim["original"], sim
            others = [f for f in sorted((LFW_MINI / r["identity"]).glob("*.jpg")) if f.name != Path(r["source"]).name]
            assert mean_similarity(encoder, cloak, others) < mean_similarity(encoder, original, others)
        else:  # further than random noise of the same DSSIM in the same box
            noise = [shift(encoder, original, noise_at_dssim(original, cloak, seed)) for seed in range(3)]
            assert r["feature_shift"]["dlib"] > 2 * max(noise), (r["feature_shift"], noise)


def test_eval_protection_with_dlib_as_surrogate(tmp_path: Path):
    from clipface.cli import app

    out = tmp_path / "prot"
    args = ["eval", "protection", "--method", "lowkey", "--mode", "low", "--surrogate", "dlib", "--model", "dlib"]
    args += ["--dataset", "bundled:lfw-mini", "--max-identities", "3", "--max-per-identity", "4"]
    args += ["--user", "Ariel_Sharon", "--steps", "2", "--out", str(out), "-q", "--no-cache", "--threads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (r,) = json.loads((out / "results.json").read_text())["results"]
    assert r["surrogates"] == ["dlib"] and r["model"] == "dlib" and r["white_box"] and r["n_cloaks"] > 0
