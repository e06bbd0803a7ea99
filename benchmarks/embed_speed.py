"""Images per second and peak memory of clipface's embedding paths against a plain transformers loop.

One command times, on this machine and in one run:

* ``baseline``: ``CLIPModel.get_image_features`` in a simple loop, batch 32, images read from disk
  with PIL and preprocessed by the model's own ``CLIPImageProcessor``;
* ``torch``: :func:`clipface.embed.pipeline.embed_images` (decoding threads overlap the model) with the torch
  encoder, torch threads set by :mod:`clipface.models.backends.threads`;
* ``compile``: the same pipeline with the torch encoder run through ``torch.compile`` (inductor,
  frozen weights; the one-off compilation happens in the warm-up and is reported as ``warmup_s``);
* ``onnx_fp32`` / ``onnx_int8``: the same pipeline with :class:`clipface.models.backends.onnx.OnnxEncoder`;

for a CLIP of ViT-B/32's exact sizes with random weights (speed does not depend on the values),
and, in full mode, for ``facenet-casia`` (torch against ONNX) and ``dlib`` (its own serial loop
against clipface's pipeline) where installed. Every path runs in a fresh subprocess (so its peak
RSS is its own), after a warm-up on 8 images; the median of several repeats is reported, with a
breakdown of one batch into its stages and the cosine of its embeddings to the torch path's.

    python benchmarks/embed_speed.py                 # full: 512 images, 3 repeats, all models
    python benchmarks/embed_speed.py --quick --out /tmp/speed.json   # ViT-B/32 only, 96 images

Writes ``benchmarks/results/embed_speed.json`` and ``.md`` (``embed_speed_quick.*`` with ``--quick``; or
``--out FILE`` and FILE with ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from _common import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "datasets" / "lfw-deepfunneled"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "embed_speed.json"
BATCH = 32
CLIP_NAME = "bench:ViT-B-32-random"
#: Models and the paths timed for each; the first path is the one ratios are taken to.
PATHS = {
    CLIP_NAME: ("baseline", "torch", "compile", "onnx_fp32", "onnx_int8"),
    "facenet-casia": ("torch", "compile", "onnx_fp32", "onnx_int8"),
    "dlib": ("loop", "pipeline"),
}
#: The path whose embeddings the others are compared with.
PARITY_REFERENCE = {CLIP_NAME: "torch", "facenet-casia": "torch", "dlib": "loop"}


# -- the ViT-B/32-sized CLIP ------------------------------------------------------------------
def vit_b32_config() -> Any:
    """``CLIPConfig`` with OpenAI ViT-B/32's sizes (vision 768 x 12 layers x 12 heads, patch 32; text 512 x 12 x 8)."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=49408,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)


def clip_dir() -> Path:
    """Where the random ViT-B/32-sized CLIP is saved (in clipface's cache)."""
    from clipface.files import cache_root

    return cache_root() / "benchmarks" / "clip-vit-b-32-random-seed0"


def build_clip(directory: Path) -> None:
    """Save a seeded random CLIP of ViT-B/32's sizes and OpenAI's image processor to ``directory``."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    CLIPModel(vit_b32_config()).save_pretrained(tmp)
    CLIPImageProcessor().save_pretrained(tmp)  # OpenAI's defaults: 224 shortest edge, bicubic, centre crop
    os.replace(tmp, directory)


def register_clip() -> None:
    """Make the saved CLIP loadable as ``CLIP_NAME`` through clipface's registry."""
    from clipface.models.registry import ModelSpec, register

    register(
        ModelSpec(
            name=CLIP_NAME,
            family="clip",
            loader="clipface.models.clip_hf:load",
            description="BENCHMARK: CLIP with ViT-B/32's sizes and random weights (speed only)",
            pretraining="none (random weights)",
            image_size=224,
            embed_dim=512,
            approx_params_m=151,
            is_test=True,
        )
    )


# -- workers (each in its own process) ---------------------------------------------------------
def image_list(root: Path, n: int) -> list[Path]:
    """The first ``n`` images of an LFW-layout folder, in name order."""
    out: list[Path] = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        out.extend(sorted(f for f in person.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")))
        if len(out) >= n:
            break
    if len(out) < n:
        raise SystemExit(f"{root} holds only {len(out)} images, {n} asked for")
    return out[:n]


def per_image_ms(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1000


def load_clipface(model: str, path: str) -> Any:
    """The encoder of ``model`` for a clipface ``path`` (``torch``, ``compile``, ``onnx_fp32``, ``onnx_int8``,
    ``pipeline``)."""
    from clipface.models.backends.select import with_backend
    from clipface.models.registry import create_encoder

    weights = str(clip_dir()) if model == CLIP_NAME else None
    encoder = create_encoder(model, weights=weights)
    if path.startswith("onnx_"):
        return with_backend(encoder, "onnx", path.split("_")[1])
    return with_backend(encoder, path) if path in ("torch", "compile") else encoder


def worker(model: str, path: str, paths: list[Path], repeats: int) -> dict[str, Any]:
    """Time ``path`` of ``model`` on ``paths``; return the measurements and the last run's embeddings."""
    from clipface.models.backends.threads import prefer_passive_waits

    if path != "baseline":  # clipface's setting (its CLI makes it before torch loads); the baseline keeps the default
        prefer_passive_waits()
    if model == CLIP_NAME:
        register_clip()
    start = time.perf_counter()
    run, stages, info = (_baseline if path == "baseline" else _dlib_loop if path == "loop" else _clipface)(model, path)
    load_s = time.perf_counter() - start
    first = paths[:BATCH]
    start = time.perf_counter()
    run(paths[:8])  # warm-up: first-call allocations, thread pools, lazy imports, compilation
    warmup_s = time.perf_counter() - start
    seconds, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = run(paths)
        seconds.append(time.perf_counter() - t)
    assert result is not None
    median = statistics.median(seconds)
    return {
        "images_per_s": round(len(paths) / median, 2),
        "seconds": [round(s, 3) for s in seconds],
        "n_images": len(paths),
        "n_embedded": len(result[0]),
        "load_s": round(load_s, 2),
        "warmup_s": round(warmup_s, 2),
        "stages_ms_per_image": {k: round(v, 2) for k, v in stages(first).items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        **info,
        "_embeddings": result,
    }


Runner = Callable[[Sequence[Path]], tuple[list[str], np.ndarray]]


def _baseline(model: str, path: str) -> tuple[Runner, Callable[[Sequence[Path]], dict[str, float]], dict[str, Any]]:
    """The plain loop anyone would write with transformers."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    clip = CLIPModel.from_pretrained(str(clip_dir())).eval()
    processor = CLIPImageProcessor.from_pretrained(str(clip_dir()))

    def features(pixels: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = clip.get_image_features(pixel_values=pixels)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(out, dim=-1).numpy()

    def run(files: Sequence[Path]) -> tuple[list[str], np.ndarray]:
        out = []
        for i in range(0, len(files), BATCH):
            images = [Image.open(f).convert("RGB") for f in files[i : i + BATCH]]
            out.append(features(processor(images=images, return_tensors="pt")["pixel_values"]))
        return [str(f) for f in files], np.concatenate(out)

    def stages(files: Sequence[Path]) -> dict[str, float]:
        images: list[Any] = []
        pixels: dict[str, Any] = {}
        return {
            "decode": per_image_ms(lambda: images.extend(Image.open(f).convert("RGB") for f in files), len(files)),
            "preprocess": per_image_ms(
                lambda: pixels.update(processor(images=images, return_tensors="pt")), len(files)
            ),
            "model": per_image_ms(lambda: features(pixels["pixel_values"]), len(files)),
        }

    info = {"threads": torch.get_num_threads(), "processor": type(processor).__name__}
    return run, stages, info


def _clipface(model: str, path: str) -> tuple[Runner, Callable[[Sequence[Path]], dict[str, float]], dict[str, Any]]:
    """clipface's pipeline: hashing, decoding and preparation in threads, the model in the main thread."""
    from clipface.data.dataset import FaceImage
    from clipface.data.images import load_image
    from clipface.embed.cache import NullCache
    from clipface.embed.pipeline import default_workers, embed_images
    from clipface.errors import ImageError

    encoder = load_clipface(model, path)

    def run(files: Sequence[Path]) -> tuple[list[str], np.ndarray]:
        images = [FaceImage(Path(f), Path(f).parent.name) for f in files]
        result = embed_images(encoder, images, NullCache(), batch_size=BATCH, progress=False)
        return [str(im.path) for im in result.images], result.embeddings

    def stages(files: Sequence[Path]) -> dict[str, float]:
        prepared: list[np.ndarray] = []

        def prepare() -> None:
            for f in files:
                try:
                    prepared.append(encoder.prepare(load_image(f)))
                except ImageError:  # no face: not embedded
                    pass

        return {
            "decode+prepare (one thread)": per_image_ms(prepare, len(files)),
            "model": per_image_ms(lambda: encoder.encode_prepared(np.stack(prepared)), max(1, len(prepared))),
        }

    from clipface.models.base import TorchEncoder

    threads = getattr(encoder, "threads", None) or (_torch_threads() if isinstance(encoder, TorchEncoder) else None)
    info = {"threads": threads, "decode_workers": default_workers()}
    return run, stages, info


def _dlib_loop(model: str, path: str) -> tuple[Runner, Callable[[Sequence[Path]], dict[str, float]], dict[str, Any]]:
    """dlib as its own loop: read, align and embed one batch after another in one thread."""
    from clipface.data.images import load_image
    from clipface.errors import ImageError

    encoder = load_clipface(model, path)

    def run(files: Sequence[Path]) -> tuple[list[str], np.ndarray]:
        names, out = [], []
        for i in range(0, len(files), BATCH):
            chips = []
            for f in files[i : i + BATCH]:
                try:
                    chips.append(encoder.prepare(load_image(f)))
                    names.append(str(f))
                except ImageError:
                    pass
            if chips:
                out.append(encoder.encode_prepared(np.stack(chips)))
        return names, np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)

    def stages(files: Sequence[Path]) -> dict[str, float]:
        chips: list[np.ndarray] = []

        def prepare() -> None:
            for f in files:
                try:
                    chips.append(encoder.prepare(load_image(f)))
                except ImageError:
                    pass

        return {
            "decode+align": per_image_ms(prepare, len(files)),
            "model": per_image_ms(lambda: encoder.encode_prepared(np.stack(chips)), max(1, len(chips))),
        }

    return run, stages, {"threads": None}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def setup_worker(models: Sequence[str]) -> dict[str, Any]:
    """Build the CLIP if needed and export/quantise every ONNX graph, so that no timed path exports."""
    out: dict[str, Any] = {}
    if CLIP_NAME in models:
        register_clip()
        if not (clip_dir() / "config.json").is_file():
            start = time.perf_counter()
            clip_dir().parent.mkdir(parents=True, exist_ok=True)
            build_clip(clip_dir())
            out["build_clip_s"] = round(time.perf_counter() - start, 1)
    for model in models:
        for path in PATHS[model]:
            if path.startswith("onnx_"):
                start = time.perf_counter()
                encoder = load_clipface(model, path)
                out[f"{model} {path}"] = {
                    "seconds": round(time.perf_counter() - start, 1),
                    "written": [p.name for p in encoder.written],
                }
    return out


# -- driver ------------------------------------------------------------------------------------
def available_models(quick: bool) -> tuple[list[str], dict[str, str]]:
    """Models to time, and why others are left out."""
    from clipface.models.registry import get_spec

    models, skipped = [CLIP_NAME], {}
    if quick:
        return models, {m: "not timed in --quick mode" for m in PATHS if m != CLIP_NAME}
    for name in ("facenet-casia", "dlib"):
        ok, why = get_spec(name).availability()
        (models.append(name) if ok else skipped.__setitem__(name, why))
    return models, skipped


def spawn(args: list[str]) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh interpreter and return the JSON it prints last."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vit_gflops_per_image(config: Any) -> float:
    """Forward cost of a CLIP vision tower in GFLOP (2 per multiply-add): patches, 12 blocks, projection."""
    v = config.vision_config
    d, mlp, layers, patch, size = v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.patch_size, v.image_size
    n = (size // patch) ** 2 + 1
    macs = (n - 1) * 3 * patch * patch * d  # patch embedding
    macs += layers * n * (4 * d * d + 2 * d * mlp)  # q, k, v, out projections and the MLP
    macs += layers * 2 * n * n * d  # attention scores and weighted sum
    macs += d * config.projection_dim
    return 2 * macs / 1e9


def gemm_peak_gflops() -> dict[str, Any]:
    """Best fp32 throughput of torch matrix products of ViT-B/32's shapes (batch 32) on the inference threads."""
    import torch

    from clipface.models.backends.threads import configure_torch_threads

    threads = configure_torch_threads(None)
    best = 0.0
    for n, k, m in ((1600, 768, 3072), (1600, 3072, 768), (1600, 768, 768)):
        a, b = torch.rand(n, k), torch.rand(k, m)
        a @ b
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n * k * m * reps / (time.perf_counter() - start) / 1e9)
    return {"gflops": round(best, 1), "threads": threads}


def cosine(a: tuple[list[str], np.ndarray], b: tuple[list[str], np.ndarray]) -> dict[str, float] | None:
    """Mean and minimum cosine of two paths' embeddings over the images both embedded."""
    index = {p: i for i, p in enumerate(b[0])}
    rows = [(i, index[p]) for i, p in enumerate(a[0]) if p in index]
    if not rows:
        return None
    cos = (a[1][[i for i, _ in rows]] * b[1][[j for _, j in rows]]).sum(axis=1)
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6), "n": len(rows)}


def markdown(doc: dict[str, Any]) -> str:
    """The results as a Markdown table, with the machine and settings above it."""
    m, s = doc["machine"], doc["settings"]
    lines = [
        "# Embedding speed",
        "",
        f"{m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical), ISA {', '.join(m['isa'])}; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, transformers {m['transformers']}. "
        f"Load average (1 min) {m['load_average_1m_at_start']} at start, {m.get('load_average_1m_at_end')} at end.",
        "",
        f"{s['n_images']} images from `{s['images']}`, batch {BATCH}, median of {s['repeats']} runs after a "
        f"warm-up on 8 images; each path in a fresh process. Ratio: to the first path of each model. "
        f"Cosine: to the {', '.join(f'{k} {v}' for k, v in PARITY_REFERENCE.items())} path's embeddings.",
        "",
        "| model | path | images/s | ratio | peak RSS MB | cosine mean / min | stages, ms per image (one batch) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for model, entry in doc["models"].items():
        for path, r in entry["paths"].items():
            if "error" in r:
                lines.append(f"| {model} | {path} | failed: {r['error']} | | | | |")
                continue
            cos = r.get("cosine_to_reference")
            cos_s = f"{cos['mean']:.6f} / {cos['min']:.6f}" if cos else "-"
            stages = ", ".join(f"{k} {v:g}" for k, v in r["stages_ms_per_image"].items())
            lines.append(
                f"| {model} | {path} | {r['images_per_s']:.2f} | {r['ratio_to_baseline']:.2f}x | "
                f"{r['peak_rss_mb']:.0f} | {cos_s} | {stages} |"
            )
    if doc.get("skipped"):
        lines += ["", "Not timed: " + "; ".join(f"{k} ({v})" for k, v in doc["skipped"].items()) + "."]
    roof = doc.get("fp32_ceiling")
    if roof:
        lines += [
            "",
            f"fp32 ceiling: ViT-B/32 costs {roof['gflop_per_image']:.2f} GFLOP per image; the baseline's model stage "
            f"runs at {roof['baseline_gflops']:.0f} GFLOP/s, {100 / roof['max_fp32_ratio']:.0f}% of torch's best fp32 "
            f"matrix product of the same shapes on {roof['threads']} threads ({roof['gemm_peak_gflops']:.0f} GFLOP/s), "
            "so "
            "an fp32 path computing the same embeddings can gain at most about "
            f"{max(1.0, roof['max_fp32_ratio']):.2f}x "
            f"over the baseline here (timings on this shared machine vary by about 20% from run to run).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ViT-B/32-sized CLIP only, 96 images, 2 repeats")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="LFW-layout folder (default: %(default)s)")
    ap.add_argument("-n", "--n-images", type=int, help="images per run (default 512, quick 96)")
    ap.add_argument("--repeats", type=int, help="timed runs per path (default 3, quick 2)")
    ap.add_argument(
        "--out", type=Path, help="JSON file, the Markdown beside it (default: results/embed_speed[_quick].json)"
    )
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--setup", nargs="+", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--embeddings", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = args.n_images or (96 if args.quick else 512)
    repeats = args.repeats or (2 if args.quick else 3)
    out = args.out or (DEFAULT_OUT.with_name("embed_speed_quick.json") if args.quick else DEFAULT_OUT)

    if args.setup:
        print(json.dumps(setup_worker(args.setup)))
        return 0
    if args.worker:
        result = worker(*args.worker, image_list(args.images, n), repeats)
        names, emb = result.pop("_embeddings")
        np.savez(args.embeddings, names=np.array(names), embeddings=emb)
        print(json.dumps(result))
        return 0

    image_list(args.images, n)  # fail early on a missing or small folder
    machine = machine_info()
    models, skipped = available_models(args.quick)
    common = ["--images", str(args.images), "-n", str(n), "--repeats", str(repeats)]
    print(f"setup (build the CLIP, export ONNX graphs) for {', '.join(models)}", file=sys.stderr)
    setup = spawn(["--setup", *models])
    doc: dict[str, Any] = {
        "machine": machine,
        "settings": {"images": str(args.images), "n_images": n, "repeats": repeats, "batch_size": BATCH},
        "setup": setup,
        "models": {},
        "skipped": skipped,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            results: dict[str, dict[str, Any]] = {}
            embeddings: dict[str, tuple[list[str], np.ndarray]] = {}
            for path in PATHS[model]:
                print(f"{model} {path} ...", file=sys.stderr, flush=True)
                npz = Path(tmp) / f"{path}.npz"
                results[path] = spawn(["--worker", model, path, "--embeddings", str(npz), *common])
                if "error" not in results[path]:
                    data = np.load(npz)
                    embeddings[path] = ([str(x) for x in data["names"]], data["embeddings"])
                print(
                    f"  {json.dumps({k: results[path].get(k) for k in ('images_per_s', 'peak_rss_mb', 'error')})}",
                    file=sys.stderr,
                )
            base = results[PATHS[model][0]].get("images_per_s")
            ref = embeddings.get(PARITY_REFERENCE[model])
            for path, r in results.items():
                if "error" in r:
                    continue
                r["ratio_to_baseline"] = round(r["images_per_s"] / base, 2) if base else None
                r["cosine_to_reference"] = cosine(embeddings[path], ref) if ref is not None else None
            doc["models"][model] = {"reference": PATHS[model][0], "paths": results}
    model_ms = (
        doc["models"]
        .get(CLIP_NAME, {})
        .get("paths", {})
        .get("baseline", {})
        .get("stages_ms_per_image", {})
        .get("model")
    )
    if model_ms:
        peak, gflop = gemm_peak_gflops(), vit_gflops_per_image(vit_b32_config())
        achieved = gflop / (model_ms / 1000)
        doc["fp32_ceiling"] = {
            "gflop_per_image": round(gflop, 2),
            "baseline_model_ms_per_image": model_ms,
            "baseline_gflops": round(achieved, 1),
            "gemm_peak_gflops": peak["gflops"],
            "threads": peak["threads"],
            "max_fp32_ratio": round(peak["gflops"] / achieved, 2),
        }
    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    doc["paths"] = doc["models"][CLIP_NAME]["paths"]  # the ViT-B/32-sized CLIP, at top level
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
