"""Every command-line option, declared once (an ``Annotated`` alias each), and the one object they fill.

A command lists the aliases it takes as parameters and hands them, by keyword, to
:class:`CliOptions`; that object turns them into the Python API's arguments
(:class:`~clipface.embed.options.RunOptions`, a :class:`~clipface.data.dataset.FaceDataset`, ...).
Values are checked by the API's own rules before any work starts (:meth:`CliOptions.check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from ..errors import UsageError

DEFAULT_DATASET = "bundled:lfw-mini"

# -- models and data ------------------------------------------------------------------------------
Models = Annotated[
    List[str], typer.Option("--model", "-m", help="Model name (repeat for a comparison); see `clipface models`.")
]
Model = Annotated[str, typer.Option("--model", "-m", help="Model name; see `clipface models`.")]
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Folder of identity sub-folders, or bundled:lfw-mini.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.json and a report).")]
MinImages = Annotated[int, typer.Option("--min-images", help="Keep people with at least this many images.")]
MaxIdentities = Annotated[
    Optional[int], typer.Option("--max-identities", help="Sample at most this many people (seeded).")
]
MaxPerIdentity = Annotated[
    Optional[int], typer.Option("--max-per-identity", help="Sample at most this many images per person (seeded).")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every sampling step.")]

# -- how embeddings are computed ------------------------------------------------------------------
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass of the embedding model.")]
Workers = Annotated[
    Optional[int], typer.Option("--workers", help="Threads decoding images (default: from the machine).")
]
Threads = Annotated[Optional[int], typer.Option("--threads", help="Inference threads (default: the physical cores).")]
CacheDir = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Embedding cache folder (default $CLIPFACE_CACHE_DIR or ~/.cache/clipface)."),
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Compute every embedding, store none.")]
Device = Annotated[str, typer.Option("--device", help="torch device (cpu, cuda).")]
Weights = Annotated[
    Optional[List[str]], typer.Option("--weights", help="Local weights: DIR (one model) or MODEL=DIR (repeatable).")
]
Align = Annotated[
    Optional[str],
    typer.Option("--align", help="Face front end for every model: none, dlib or mtcnn (default: each model's own)."),
]
OnNoFace = Annotated[
    str, typer.Option("--on-no-face", help="Images with no face: skip (listed) or center (centre crop).")
]
FaceSelect = Annotated[
    str,
    typer.Option(
        "--face-select",
        help="Photos with several faces: central (FaceNet's rule: large and near the centre) or largest.",
    ),
]
Flip = Annotated[
    bool,
    typer.Option(
        "--flip/--no-flip", help="Also embed each mirrored face crop and add the two (test-time augmentation)."
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Inference backend: torch (eager), compile (torch.compile), onnx (ONNX Runtime) or dlib (dlib's own "
        "network, model dlib only).",
    ),
]
Precision = Annotated[
    str, typer.Option("--precision", help="fp32, or int8 (dynamic quantisation; needs --backend onnx).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

# -- tasks ----------------------------------------------------------------------------------------
Prompts = Annotated[
    str, typer.Option("--prompts", help='paper ("a photo of {}."), idia (21 templates) or a template with {}.')
]
Distractors = Annotated[int, typer.Option("--distractors", help="Add this many realistic distractor names (seeded).")]
Tau = Annotated[
    int, typer.Option("--tau", help="Identity inference: prompts that must agree for a name to be accepted.")
]
IdiaK = Annotated[
    Optional[int], typer.Option("--idia-k", help="Identity inference: images per person voting (default all).")
]
Pairs = Annotated[Optional[Path], typer.Option("--pairs", help="pairs.txt (default: DATASET/pairs.txt).")]
Gallery = Annotated[int, typer.Option("--gallery", help="Photos enrolled per person; the rest are probes.")]
Unknown = Annotated[float, typer.Option("--unknown", help="Share of people left out of the gallery (open-set probes).")]

# -- cloaking -------------------------------------------------------------------------------------
Method = Annotated[
    str,
    typer.Option(
        "--method", help="fawkes (targeted, Shan et al. 2020) or lowkey (untargeted, Cherepanova et al. 2021)."
    ),
]
Mode = Annotated[
    str,
    typer.Option(
        "--mode",
        help="DSSIM budget: low 0.004, mid 0.012, high 0.017 (Fawkes v1.0); also Fawkes' steps and learning rate.",
    ),
]
Surrogates = Annotated[
    List[str], typer.Option("--surrogate", "-s", help="Differentiable surrogate model (repeat for an ensemble).")
]
Region = Annotated[
    str,
    typer.Option("--region", help="Where DSSIM is budgeted: image (whole picture) or face (the surrogates' crops)."),
]
NoBudget = Annotated[
    bool, typer.Option("--no-budget", help="Keep the optimised cloak as it is, without scaling it into the budget.")
]
Steps = Annotated[
    Optional[int],
    typer.Option(
        "--steps", help="Optimisation steps instead of the method's (Fawkes max_step of the mode, LowKey 50)."
    ),
]
Jitter = Annotated[
    int,
    typer.Option(
        "--jitter",
        help="Move each edge of the face box by up to this many pixels at every step, so the cloak survives the face "
        "being detected again (0: as published).",
    ),
]
CloakBatch = Annotated[int, typer.Option("--cloak-batch", help="Images cloaked together in one optimisation.")]
CloakDir = Annotated[
    Optional[Path], typer.Option("--cloak-dir", help="Folder of cloaks, reused across runs (default OUT/cloaks).")
]
TargetDir = Annotated[
    Optional[Path],
    typer.Option(
        "--target-dir", help="Fawkes: identity sub-folders to pick targets from (default: the other people of --in)."
    ),
]
CloakIn = Annotated[
    Path, typer.Option("--in", help="Folder of identity sub-folders, or a flat folder of one person's images.")
]
CloakOut = Annotated[
    Path, typer.Option("--out", "-o", help="Output folder: PNG cloaks with a JSON record each, cloak_summary.json.")
]
Users = Annotated[
    Optional[List[str]],
    typer.Option("--user", help="Protected person (identity folder; repeatable; default everyone)."),
]
TestFrac = Annotated[
    float, typer.Option("--test-frac", help="Share of each person's photos used as clean probes (FaceCure: 0.3).")
]
Cloaked = Annotated[
    Optional[Path],
    typer.Option(
        "--cloaked",
        help="Cloaks made elsewhere: NAME_cloaked.png (fawkes) or NAME_attacked.png (lowkey) beside NAME.jpg, or a "
        "folder mirroring --dataset.",
    ),
]
EachSurrogate = Annotated[
    bool,
    typer.Option(
        "--each-surrogate", help="One cloak set per surrogate instead of an ensemble (the surrogate x target matrix)."
    ),
]
PoisonK = Annotated[str, typer.Option("--poison-k", help="Poisons per person, comma-separated.")]
PoisonKinds = Annotated[
    List[str],
    typer.Option(
        "--kind", help="mislabel (other people's photos under the name) and/or cloak (cloaks of the person's photos)."
    ),
]

# -- the search engine ----------------------------------------------------------------------------
IndexDir = Annotated[Path, typer.Option("--index", "-i", help="Index folder.")]
Images = Annotated[
    str,
    typer.Option("--images", help="Folder of images (identity sub-folders, or a flat folder), or bundled:lfw-mini."),
]
IndexKind = Annotated[
    str,
    typer.Option(
        "--kind",
        help="auto (exact up to 50k images, IVF with 4-bit PQ fast-scan codes and exact re-ranking above), flat, "
        "ivfpqfs, ivfsq8, ivfpq or hnsw (HNSW over 8-bit codes).",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing index in the folder.")]
QueryText = Annotated[Optional[str], typer.Option("--text", "-t", help="Text query (CLIP models).")]
QueryImage = Annotated[Optional[Path], typer.Option("--image", help="Photo query (any model).")]
TopK = Annotated[int, typer.Option("-k", help="Number of results.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Host = Annotated[str, typer.Option("--host", help="Interface to listen on.")]
Port = Annotated[int, typer.Option("--port", help="TCP port.")]
NoAuth = Annotated[
    bool, typer.Option("--no-auth", help="Serve without an API token (anyone who can connect can search).")
]
OptOut = Annotated[
    Optional[Path], typer.Option("--opt-out", help="File of identities or image SHA-256s (one a line) never shown.")
]
RateLimit = Annotated[float, typer.Option("--rate-limit", help="API requests per minute per client IP (0: unlimited).")]
MaxUploadMb = Annotated[float, typer.Option("--max-upload-mb", help="Largest request body, in MB.")]
ForwardedAllowIps = Annotated[
    Optional[str],
    typer.Option(
        "--forwarded-allow-ips", help="Proxies whose X-Forwarded-For is trusted (comma-separated IPs; default: none)."
    ),
]

# -- the main job ---------------------------------------------------------------------------------
IncludeTestModels = Annotated[bool, typer.Option("--include-test-models", help="Also run test-tiny-random.")]

#: Flags whose name differs from their field's.
FLAGS = {"n_gallery": "--gallery", "aligner": "--align", "k": "-k", "src": "--in", "index_dir": "--index"}


def flag_of(arg: str) -> str:
    """The command-line flag of an API argument name (``batch_size`` -> ``--batch-size``; ``$VAR`` stays)."""
    if arg.startswith("$"):
        return arg
    return FLAGS.get(arg, "--" + arg.replace("_", "-"))


@dataclass
class CliOptions:
    """Every value a command was given, by name: commands fill the fields they take, the rest keep defaults."""

    # models and data
    model: list[str] = field(default_factory=list)
    dataset: str = DEFAULT_DATASET
    out: Path | None = None
    min_images: int = 1
    max_identities: int | None = None
    max_per_identity: int | None = None
    seed: int = 0
    # how embeddings are computed
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    device: str = "cpu"
    weights: list[str] | None = None
    align: str | None = None
    on_no_face: str = "skip"
    face_select: str = "central"
    flip: bool = False
    backend: str = "torch"
    precision: str = "fp32"
    quiet: bool = False
    # tasks
    prompts: str = "paper"
    distractors: int = 0
    tau: int = 1
    idia_k: int | None = None
    pairs: Path | None = None
    gallery: int = 5
    unknown: float = 0.1
    # cloaking
    method: str = "fawkes"
    mode: str = "low"
    surrogate: list[str] = field(default_factory=list)
    region: str = "image"
    no_budget: bool = False
    steps: int | None = None
    jitter: int = 0
    cloak_batch: int = 4
    cloak_dir: Path | None = None
    target_dir: Path | None = None
    src: Path | None = None
    user: list[str] | None = None
    test_frac: float = 0.3
    cloaked: Path | None = None
    each_surrogate: bool = False
    poison_k: str = "0,1,2,4"
    kind: list[str] = field(default_factory=list)
    # the search engine
    index: Path | None = None
    images: str | None = None
    index_kind: str = "auto"
    overwrite: bool = False
    text: str | None = None
    image: Path | None = None
    k: int = 10
    as_json: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    no_auth: bool = False
    opt_out: Path | None = None
    rate_limit: float = 60.0
    max_upload_mb: float = 10.0
    forwarded_allow_ips: str | None = None
    # the main job
    include_test_models: bool = False

    @classmethod
    def of(cls, values: dict[str, Any]) -> CliOptions:
        """Gather a command's parameters (``locals()`` as its first statement) by keyword.

        A single ``--model`` (``index build``) becomes a one-element list.
        """
        values = dict(values)
        if isinstance(values.get("model"), str):
            values["model"] = [values["model"]]
        return cls(**values)

    # -- into the Python API ----------------------------------------------------------------
    def weights_map(self) -> dict[str, str]:
        """``--weights`` as model -> folder (``DIR`` for a single model, ``MODEL=DIR`` otherwise)."""
        out: dict[str, str] = {}
        models = list(dict.fromkeys([*self.model, *self.surrogate]))
        for w in self.weights or []:
            if "=" in w and not Path(w).exists():
                name, path = w.split("=", 1)
                out[name] = path
            elif len(models) == 1:
                out[models[0]] = w
            else:
                raise UsageError("weights", w, "with several models, write --weights MODEL=DIR")
        return out

    def run_options(self, progress: bool | None = None) -> Any:
        """The :class:`~clipface.embed.options.RunOptions` of these values (the cache folder is checked here)."""
        from ..embed.cache import EmbeddingCache, NullCache
        from ..embed.options import RunOptions

        opts = RunOptions(
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device,
            progress=not self.quiet if progress is None else progress,
            weights=self.weights_map(),
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

    def check(self, out: bool = True) -> CliOptions:
        """Check the shared values before any work: models known, numbers in range, the output folder writable."""
        from ..models.runtime import check_models

        check_models([*self.model, *self.surrogate])
        for name in ("min_images",):
            if getattr(self, name) < 1:
                raise UsageError(name, getattr(self, name), "must be at least 1")
        for name in ("max_identities", "max_per_identity"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(name, value, "must be at least 1")
        self.weights_map()
        if out and self.out is not None:
            from ..api import check_out

            check_out(self.out)
        return self

    def load_dataset(self, echo: Any = None) -> Any:
        """The filtered dataset, announced on stderr with its skipped files."""
        from ..data.dataset import FaceDataset

        ds = FaceDataset.from_folder(
            self.dataset,
            min_images=self.min_images,
            max_identities=self.max_identities,
            max_per_identity=self.max_per_identity,
            seed=self.seed,
        )
        say = echo or (lambda m: typer.echo(m, err=True))
        say(f"dataset {ds.name}: {len(ds)} images of {len(ds.identities)} people, {len(ds.skipped)} files skipped")
        for s in ds.skipped[:20]:
            say(f"  skipped {s.path}: {s.reason}")
        return ds
