"""Every command-line option, declared once: the option groups (typed dataclasses, :mod:`.expand`).

A command takes the groups it needs as parameters; each group turns itself into what the Python
API takes (:meth:`EmbedOptions.run_options`, :meth:`SampleOptions.load`,
:meth:`CloakOptions.settings`, ...). Values are checked by the API's own rules before any work
starts (:func:`check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from ..errors import UsageError
from .expand import REQUIRED, api_args, flag, group

DEFAULT_DATASET = "bundled:lfw-mini"
#: Model presets, which name no one model (``--weights DIR`` cannot be meant for them).
PRESETS = ("default", "paper", "all")
#: The embedding options of a face recogniser's tuning, which the cloaking commands do not take.
TUNING = ("face_select", "flip", "backend", "precision")


# -- models and data ------------------------------------------------------------------------------
@group
class OutOption:
    """Where a job writes ``results.json`` and its report (each command has its own default folder)."""

    out: Path = flag(Path("runs/latest"), "--out", "-o", help="Output folder (results.json and a report).")


@group
class EvalOptions(OutOption):
    """The models compared and where their results go (every ``eval`` command)."""

    model: List[str] = flag(
        REQUIRED, "--model", "-m", help="Model name (repeat for a comparison); see `clipface models`."
    )


@group
class ModelOption:
    """One model (an index's, an audit's judge)."""

    model: str = flag(REQUIRED, "--model", "-m", help="Model name; see `clipface models`.")


@group
class Seeded:
    seed: int = flag(0, "--seed", help="Seed of every sampling step.")


@group
class DatasetOptions:
    dataset: str = flag(DEFAULT_DATASET, "--dataset", "-d", help="Folder of identity sub-folders, or bundled:lfw-mini.")


@group
class SampleOptions(DatasetOptions, Seeded):
    """The dataset and which of its people and photos are used."""

    min_images: int = flag(1, "--min-images", help="Keep people with at least this many images.")
    max_identities: Optional[int] = flag(None, "--max-identities", help="Sample at most this many people (seeded).")
    max_per_identity: Optional[int] = flag(
        None, "--max-per-identity", help="Sample at most this many images per person (seeded)."
    )

    def check(self) -> None:
        if self.min_images < 1:
            raise UsageError("min_images", self.min_images, "must be at least 1")
        for name in ("max_identities", "max_per_identity"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(name, value, "must be at least 1")

    def load(self, echo: Callable[[str], None]) -> Any:
        """The filtered dataset, announced (``echo``) with its skipped files."""
        from ..data.dataset import FaceDataset

        ds = FaceDataset.from_folder(
            self.dataset,
            min_images=self.min_images,
            max_identities=self.max_identities,
            max_per_identity=self.max_per_identity,
            seed=self.seed,
        )
        echo(f"dataset {ds.name}: {len(ds)} images of {len(ds.identities)} people, {len(ds.skipped)} files skipped")
        for s in ds.skipped[:20]:
            echo(f"  skipped {s.path}: {s.reason}")
        return ds


# -- how embeddings are computed ------------------------------------------------------------------
@group
class DeviceOptions:
    """Where a model runs and which local weights it loads."""

    device: str = flag("cpu", "--device", help="torch device (cpu, cuda).")
    weights: Optional[List[str]] = flag(
        None, "--weights", help="Local weights: DIR (one model) or MODEL=DIR (repeatable)."
    )

    def weights_map(self, models: Sequence[str]) -> dict[str, str]:
        """``--weights`` as model -> folder (``DIR`` for a single model, ``MODEL=DIR`` otherwise)."""
        out: dict[str, str] = {}
        named = [m for m in dict.fromkeys(models) if m not in PRESETS]
        for w in self.weights or []:
            if "=" in w and not Path(w).exists():
                name, path = w.split("=", 1)
                out[name] = path
            elif len(named) == 1:
                out[named[0]] = w
            else:
                raise UsageError("weights", w, "with several models, write --weights MODEL=DIR")
        return out

    def one_weights(self) -> str | None:
        """The one ``--weights DIR`` of a command that loads one model (an index's)."""
        return self.weights[0] if self.weights else None


@group
class EmbedOptions(DeviceOptions):
    """How images become embeddings: batching, threads, cache, face front end, backend and precision."""

    batch_size: int = flag(32, "--batch-size", help="Images per forward pass of the embedding model.")
    workers: Optional[int] = flag(None, "--workers", help="Threads decoding images (default: from the machine).")
    threads: Optional[int] = flag(None, "--threads", help="Inference threads (default: the physical cores).")
    cache_dir: Optional[Path] = flag(
        None, "--cache-dir", help="Embedding cache folder (default $CLIPFACE_CACHE_DIR or ~/.cache/clipface)."
    )
    no_cache: bool = flag(False, "--no-cache", help="Compute every embedding, store none.")
    align: Optional[str] = flag(
        None, "--align", help="Face front end for every model: none, dlib or mtcnn (default: each model's own)."
    )
    on_no_face: str = flag("skip", "--on-no-face", help="Images with no face: skip (listed) or center (centre crop).")
    face_select: str = flag(
        "central",
        "--face-select",
        help="Photos with several faces: central (FaceNet's rule: large and near the centre) or largest.",
    )
    flip: bool = flag(
        False, "--flip/--no-flip", help="Also embed each mirrored face crop and add the two (test-time augmentation)."
    )
    backend: str = flag(
        "torch",
        "--backend",
        help="Inference backend: torch (eager), compile (torch.compile), onnx (ONNX Runtime) or dlib (dlib's own "
        "network, model dlib only).",
    )
    precision: str = flag(
        "fp32",
        "--precision",
        help="fp32; int8 (dynamic quantisation, --backend onnx); bf16 (torch, CPU or CUDA); fp16 (CUDA).",
    )
    quiet: bool = flag(False, "--quiet", "-q", help="No progress bars.")

    def run_options(self, models: Sequence[str]) -> Any:
        """The :class:`~clipface.embed.options.RunOptions` of these values for ``models`` (checked when made)."""
        from ..embed.cache import EmbeddingCache, NullCache
        from ..embed.options import RunOptions

        opts = RunOptions(
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device,
            progress=not self.quiet,
            weights=self.weights_map(models),
            aligner=self.align,
            on_no_face=self.on_no_face,
            face_select=self.face_select,
            flip=self.flip,
            backend=self.backend,
            precision=self.precision,
            threads=self.threads,
        )
        opts.cache = NullCache() if self.no_cache else EmbeddingCache(self.cache_dir)
        return opts


# -- tasks ----------------------------------------------------------------------------------------
@group
class IdentityOptions:
    """Zero-shot naming and the identity inference attack."""

    prompts: str = flag(
        "paper", "--prompts", help='paper ("a photo of {}."), idia (21 templates) or a template with {}.'
    )
    distractors: Optional[int] = flag(
        None,
        "--distractors",
        help="Add this many realistic distractor names (seeded; default: as many as make the attack's pool of 1,000).",
    )
    tau: int = flag(1, "--tau", help="Identity inference: prompts that must agree for a name to be accepted.")
    idia_k: Optional[str] = flag(
        None,
        "--idia-k",
        help="Identity inference: images per person voting (default all); several, comma-separated (1,3,5), "
        "give the curve over k (20 random draws each).",
    )
    non_members: Optional[Path] = flag(
        None, "--non-members", help="File of identity names (one a line) known not to be in the training data."
    )
    non_members_dir: Optional[Path] = flag(
        None,
        "--non-members-dir",
        help="Identity folders of people known not to be in the training data (added).",
    )

    def idia(self) -> tuple[int | None, tuple[int, ...]]:
        """``--idia-k`` as ``(k, ks)``: one number votes with ``k`` images; several give the curve ``ks``."""
        if self.idia_k is None or not str(self.idia_k).strip():
            return None, ()
        try:
            values = [int(v) for v in str(self.idia_k).split(",") if v.strip()]
        except ValueError:
            raise UsageError(
                "idia_k", self.idia_k, "expected a whole number or comma-separated whole numbers"
            ) from None
        for v in values:
            if v < 1:
                raise UsageError("idia_k", v, "must be at least 1")
        return (values[0], ()) if len(values) == 1 else (None, tuple(values))

    def non_member_names(self) -> list[str]:
        """The names in ``--non-members`` (one a line; a byte-order mark and blank lines are fine)."""
        if self.non_members is None:
            return []
        try:
            text = Path(self.non_members).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError("non_members", str(self.non_members), f"cannot read the file ({exc})") from None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@group
class GalleryOptions:
    """Gallery identification: enrolled photos per person and the open-set share."""

    gallery: int = flag(5, "--gallery", help="Photos enrolled per person; the rest are probes.")
    unknown: float = flag(0.1, "--unknown", help="Share of people left out of the gallery (open-set probes).")


# -- cloaking -------------------------------------------------------------------------------------
@group
class CloakOptions(Seeded):
    """How photos are cloaked: the method, its budget, the surrogates and the robust or published setting."""

    method: str = flag(
        "fawkes",
        "--method",
        help="fawkes (targeted, Shan et al. 2020) or lowkey (untargeted, Cherepanova et al. 2021).",
    )
    mode: str = flag(
        "low",
        "--mode",
        help="DSSIM budget: low 0.004, mid 0.012, high 0.017 (Fawkes v1.0); also Fawkes' steps and learning rate.",
    )
    surrogate: List[str] = flag(
        [], "--surrogate", "-s", help="Differentiable surrogate model (repeat for an ensemble)."
    )
    region: str = flag(
        "face", "--region", help="Where DSSIM is budgeted: image (whole picture) or face (the surrogates' crops)."
    )
    no_budget: bool = flag(
        False, "--no-budget", help="Keep the optimised cloak as it is, without scaling it into the budget."
    )
    steps: Optional[int] = flag(
        None, "--steps", help="Optimisation steps instead of the method's (Fawkes max_step of the mode, LowKey 50)."
    )
    jitter: Optional[int] = flag(
        None,
        "--jitter",
        help="Move each edge of the face box by up to this many pixels at every step, so the cloak survives the face "
        "being detected again (default 6, the robust setting; 0 with --published).",
    )
    eot: Optional[str] = flag(
        None, "--eot", help="Also average over resize and/or jpeg (comma-separated), as photo sites apply them."
    )
    published: bool = flag(
        False, "--published", help="The methods as published: the exact face crop, no jitter, no transformation."
    )
    cloak_batch: int = flag(4, "--cloak-batch", help="Images cloaked together in one optimisation.")

    def settings(self) -> Any:
        """The :class:`~clipface.cloak.settings.CloakSettings` of these options (robust unless ``--published``)."""
        from ..jobs import cloak_settings

        return cloak_settings(**api_args(cloak_settings, self, skip=("surrogate", "cloak_batch")))


@group
class CloakReuse:
    """Cloaks kept for later runs, or made elsewhere."""

    cloak_dir: Optional[Path] = flag(
        None, "--cloak-dir", help="Folder of cloaks, reused across runs (default OUT/cloaks)."
    )
    cloaked: Optional[Path] = flag(
        None,
        "--cloaked",
        help="Cloaks made elsewhere: NAME_cloaked.png (fawkes) or NAME_attacked.png (lowkey) beside NAME.jpg, or a "
        "folder mirroring --dataset.",
    )


@group
class CloakFolders:
    """What ``clipface cloak`` reads and writes."""

    src: Path = flag(REQUIRED, "--in", help="Folder of identity sub-folders, or a flat folder of one person's images.")
    out: Path = flag(
        REQUIRED, "--out", "-o", help="Output folder: PNG cloaks with a JSON record each, cloak_summary.json."
    )
    target_dir: Optional[Path] = flag(
        None,
        "--target-dir",
        help="Fawkes: identity sub-folders to pick targets from (default: the other people of --in).",
    )


@group
class ProtectionOptions:
    """Who is protected and how the protection is measured (FaceCure's split)."""

    users: Optional[List[str]] = flag(
        None, "--user", help="Protected person (identity folder; repeatable; default everyone)."
    )
    test_frac: float = flag(
        0.3, "--test-frac", help="Share of each person's photos used as clean probes (FaceCure: 0.3)."
    )
    repost_jpeg: Optional[int] = flag(
        None,
        "--repost-jpeg",
        help="Targets see each cloak re-encoded as JPEG of this quality, as photo sites serve it.",
    )
    each_surrogate: bool = flag(
        False,
        "--each-surrogate",
        help="One cloak set per surrogate instead of an ensemble (the surrogate x target matrix).",
    )


@group
class PoisonOptions:
    poison_k: str = flag("0,1,2,4", "--poison-k", help="Poisons per person, comma-separated.")
    kinds: List[str] = flag(
        ["mislabel"],
        "--kind",
        help="mislabel (other people's photos under the name) and/or cloak (cloaks of the person's photos).",
    )


# -- the main job ---------------------------------------------------------------------------------
@group
class StudyOptions:
    """The study's models and cloaks."""

    models: List[str] = flag(
        ["default"], "--models", help="Presets (default, paper, all) or model names, comma-separated or repeated."
    )
    include_test_models: bool = flag(False, "--include-test-models", help="Also run test-tiny-random.")
    cloak: str = flag("fawkes,lowkey", "--cloak", help="Cloak methods for the poisoned half: fawkes,lowkey or none.")
    cloak_mode: str = flag("mid", "--cloak-mode", help="DSSIM budget of the study's cloaks: low, mid or high.")
    cloak_setting: str = flag(
        "both", "--cloak-setting", help="robust (the default cloaks), published (as the papers), or both."
    )
    cloak_per_person: int = flag(2, "--cloak-per-person", help="Photos cloaked (and enrolled) per person.")

    def methods(self) -> list[str]:
        return [m.strip() for m in self.cloak.split(",") if m.strip() and m.strip() != "none"]


def check(models: Sequence[str] = (), *, out: Path | None = None, sample: SampleOptions | None = None) -> None:
    """Check the shared values before any work: models known, numbers in range, the output folder writable."""
    from ..models.registry import check_models

    check_models(list(models))
    if sample is not None:
        sample.check()
    if out is not None:
        from ..jobs import check_out

        check_out(out)


def prepare(
    models: Sequence[str], emb: EmbedOptions, *, out: Path | None = None, sample: SampleOptions | None = None
) -> Any:
    """:func:`check` the values, then the run options of ``emb`` for ``models`` (checked as they are made)."""
    check(models, out=out, sample=sample)
    return emb.run_options(models)
