"""The one object a command's options fill (:class:`CliOptions`), and how it becomes the Python API's arguments.

A command lists the aliases of :mod:`.flags` as parameters and hands them, by keyword, to
:class:`CliOptions`; that object turns them into :class:`~clipface.embed.options.RunOptions`, a
:class:`~clipface.data.dataset.FaceDataset`, cloak settings, ... Values are checked by the API's own
rules before any work starts (:meth:`CliOptions.check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from .flags import DEFAULT_DATASET

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
    distractors: int | None = None
    tau: int = 1
    idia_k: str | None = None
    non_members: Path | None = None
    non_members_dir: Path | None = None
    pairs: Path | None = None
    gallery: int = 5
    unknown: float = 0.1
    # cloaking
    method: str = "fawkes"
    mode: str = "low"
    surrogate: list[str] = field(default_factory=list)
    region: str = "face"
    no_budget: bool = False
    steps: int | None = None
    jitter: int | None = None
    eot: str | None = None
    published: bool = False
    cloak_batch: int = 4
    repost_jpeg: int | None = None
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
    opt_out_faces: Path | None = None
    opt_out_faces_threshold: float | None = None
    face_model: str | None = None
    faces: str | None = None
    rate_limit: float = 60.0
    max_upload_mb: float = 10.0
    forwarded_allow_ips: str | None = None
    clip_retrieval: bool = False
    cors_origin: list[str] | None = None
    engine: str | None = None
    indice: str | None = None
    person: Path | None = None
    name: str | None = None
    no_fetch: bool = False
    token: str | None = None
    # the study (main job)
    models: list[str] = field(default_factory=lambda: ["default"])
    include_test_models: bool = False
    cloak: str = "fawkes,lowkey"
    cloak_mode: str = "mid"
    cloak_setting: str = "both"
    cloak_per_person: int = 2
    results: Path | None = None

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
        models = list(dict.fromkeys([*self.model, *self.models, *self.surrogate]))
        models = [m for m in models if m not in ("default", "paper", "all")]  # presets name no one model
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
            from ..jobs import check_out

            check_out(self.out)
        return self

    def cloak_settings(self) -> Any:
        """The :class:`~clipface.cloak.settings.CloakSettings` of the cloak options (robust unless ``--published``)."""
        from ..jobs import cloak_settings

        return cloak_settings(
            self.method,
            self.mode,
            no_budget=self.no_budget,
            region=self.region,
            seed=self.seed,
            steps=self.steps,
            jitter=self.jitter,
            eot=self.eot,
            published=self.published,
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
        from ..textsafe import readable

        say = echo or (lambda m: typer.echo(readable(m), err=True))
        say(f"dataset {ds.name}: {len(ds)} images of {len(ds.identities)} people, {len(ds.skipped)} files skipped")
        for s in ds.skipped[:20]:
            say(f"  skipped {s.path}: {s.reason}")
        return ds
