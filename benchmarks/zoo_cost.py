"""The study at real model sizes, rehearsed here: every registered CLIP built from its exact configuration.

For each registered CLIP architecture (``clipface.models.archs``: open_clip's model configs) this
builds a ``transformers`` CLIPModel with random weights, checks its parameter count against the
registry (within 1%), saves it with ``save_pretrained`` and loads it back through clipface's own
``--weights`` path, then times image encoding (real LFW photos through ``Encoder.prepare``) and
text encoding ("a photo of NAME." prompts), and records peak memory. Each model runs in its own
process, so the memory figures are its own. A model that would not fit in this machine's memory
is reported as such, with what it would need. The projection is the cost of the full study per
model: 13,233 LFW images, and N names x 22 prompts (the paper's and the 21 of the identity
inference attack). Random weights: these are costs, never accuracies.

    python benchmarks/zoo_cost.py --max-params 500M     # B/32 to L/14-336
    python benchmarks/zoo_cost.py                       # every registered CLIP, up to bigG/14
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LFW = REPO.parent / "shared" / "datasets" / "lfw-deepfunneled"
LFW_IMAGES, LFW_NAMES = 13_233, 5_749
PROMPTS = 22
#: Bytes held per parameter while a model is built, saved and loaded back (weights once, plus slack).
OVERHEAD = 1.35


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_params(text: str) -> float:
    text = text.strip().upper()
    factor = {"K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}.get(text[-1:], 1.0)
    return float(text[:-1] if text[-1:] in "KMGB" else text) * factor


def one(name: str, precision: str, n_images: int, n_texts: int, names: int) -> dict[str, Any]:
    """Build, check, save, reload and time one model (in this process)."""
    import torch
    from PIL import Image
    from transformers import CLIPModel

    import clipface
    from clipface.models.archs import ARCHS, clip_config
    from clipface.models.registry import get_spec

    spec = get_spec(name)
    arch = ARCHS[spec.arch]
    bytes_per = 2 if precision == "bf16" else 4
    need = arch.params_m * 1e6 * bytes_per * OVERHEAD
    row: dict[str, Any] = {
        "model": name,
        "arch": spec.arch,
        "precision": precision,
        "registry_params_m": spec.approx_params_m,
    }
    if need > 0.9 * mem_available():
        row.update(fits=False, needs_gb=round(need / 2**30, 1), available_gb=round(mem_available() / 2**30, 1))
        return row
    torch.manual_seed(0)
    start = time.perf_counter()
    model = CLIPModel(clip_config(spec.arch, bool(spec.extra.get("quick_gelu"))))
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    row["build_s"] = round(time.perf_counter() - start, 1)
    n = sum(p.numel() for p in model.parameters())
    row["params_m"] = round(n / 1e6, 2)
    row["params_within_1pct"] = abs(n / 1e6 / spec.approx_params_m - 1) <= 0.01
    with tempfile.TemporaryDirectory(dir=os.environ.get("ZOO_TMP")) as tmp:
        start = time.perf_counter()
        model.save_pretrained(tmp)
        clipface.create_encoder("test-tiny-random").tokenizer.save_pretrained(tmp)  # CLIP's real BPE
        row["save_s"] = round(time.perf_counter() - start, 1)
        row["checkpoint_gb"] = round(sum(f.stat().st_size for f in Path(tmp).glob("*")) / 2**30, 2)
        del model
        gc.collect()
        start = time.perf_counter()
        opts = clipface.RunOptions(weights={name: tmp}, precision=precision)
        encoder = clipface.load_encoder(name, opts)  # the --weights path of every command
        row["load_s"] = round(time.perf_counter() - start, 1)
    photos = sorted(LFW.glob("*/*_0001.jpg"))[:n_images] if LFW.is_dir() else []
    images = [Image.open(p).convert("RGB") for p in photos] or [
        Image.new("RGB", (250, 250), (128, 128, 128))
    ] * n_images
    batch = __import__("numpy").stack([encoder.prepare(im) for im in images])
    encoder.encode_prepared(batch[:2])  # warm-up
    start = time.perf_counter()
    encoder.encode_prepared(batch)
    row["image_ms"] = round(1000 * (time.perf_counter() - start) / len(batch), 1)
    texts = [f"a photo of Person Number {i}." for i in range(n_texts)]
    encoder.encode_text(texts[:2])
    start = time.perf_counter()
    encoder.encode_text(texts)
    row["text_ms"] = round(1000 * (time.perf_counter() - start) / len(texts), 2)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    row["fits"] = True
    n_texts_study = names * PROMPTS
    row["study_hours"] = round((LFW_IMAGES * row["image_ms"] + n_texts_study * row["text_ms"]) / 3.6e6, 2)
    row["study_texts"] = n_texts_study
    return row


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# The study at real model sizes (random weights)",
        "",
        f"Every registered CLIP built from its published configuration with random weights, saved with "
        f"`save_pretrained` and loaded back through `--weights`; {doc['images']} LFW photos and {doc['texts']} prompts "
        f"timed after a warm-up, {doc['precision']}, on {m['cpu']} ({m['physical_cores']} cores, "
        f"{', '.join(m['isa'])}; {m['torch_threads']} torch threads). Projected study: {LFW_IMAGES:,} LFW images and "
        f"{doc['names']:,} names x {PROMPTS} prompts. Timings on these shared machines move by 20% or more between "
        "runs.",
        "",
        "| model | params (M) | registry (M) | within 1% | checkpoint GB | load s | ms / image | ms / text | peak RSS "
        "GB "
        "| study (hours) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        if not r.get("fits"):
            detail = (
                r.get("error") or f"does not fit: needs about {r.get('needs_gb')} GB, {r.get('available_gb')} GB free"
            )
            lines.append(f"| {r['model']} | — | {r['registry_params_m']} | — | — | — | {detail} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['params_m']} | {r['registry_params_m']} | "
            f"{'yes' if r['params_within_1pct'] else 'NO'} "
            f"| {r['checkpoint_gb']} | {r['load_s']} | {r['image_ms']} | {r['text_ms']} | {r['peak_rss_gb']} "
            f"| {r['study_hours']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-params", default=None, help="Only models up to this size, e.g. 500M or 1.5G.")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--names", type=int, default=LFW_NAMES, help="Candidate names of the projected study.")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "zoo_cost.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.precision, args.images, args.texts, args.names)))
        return
    import torch

    from clipface.models.registry import get_spec, list_models

    limit = parse_params(args.max_params) if args.max_params else float("inf")
    specs = [s for s in list_models(include_test=False) if s.family == "clip" and s.approx_params_m * 1e6 <= limit]
    names = [s.name for s in sorted(specs, key=lambda s: (s.approx_params_m, s.name))]
    seen_archs: set[str] = set()
    rows = []
    for name in names:
        arch = get_spec(name).arch
        if arch in seen_archs:  # one checkpoint per architecture: the same cost
            continue
        seen_archs.add(arch)
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--precision",
            args.precision,
            "--images",
            str(args.images),
            "--texts",
            str(args.texts),
            "--names",
            str(args.names),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            row = {
                "model": name,
                "arch": arch,
                "fits": False,
                "error": f"failed (exit {proc.returncode}): {tail}",
                "registry_params_m": get_spec(name).approx_params_m,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "benchmark": "zoo_cost",
        "precision": args.precision,
        "images": args.images,
        "texts": args.texts,
        "names": args.names,
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
        "results": rows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
