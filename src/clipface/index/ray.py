"""Scale-out embedding on Ray: many workers write embedding shards (:mod:`.shards`) that a :class:`FaceIndex` merges.

The driver only lists the files. Ray Data spreads the paths over a pool of actors
(``ray.data.from_items`` -> ``map_batches`` with :class:`EmbedWorker`, one actor per worker,
each holding one encoder); every batch goes through the same single-process pipeline
(:func:`clipface.embed.pipeline.embed_images`: load, ``Encoder.prepare``, ``Encoder.encode_prepared``),
so vectors are identical to a local build. Each batch becomes one shard written by the actor
itself. ``FaceIndex.build_from_shards`` / ``FaceIndex.add_shards`` merge them; a new inverted file's codes are
then added by Ray tasks, a slice of rows each, and merged (:func:`add_parts_on_ray`, :mod:`.parts`). Works on a local
cluster (``ray.init(num_cpus=2)``) as on many machines sharing ``out_dir``.

:func:`ray_cluster` connects the driver for one run: to a running cluster by its address (``ray start
--head`` prints it), or ``local`` (a cluster of this machine, started for the run and stopped after).
Each shard records the node that wrote it, so a run can show where its work went.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data.dataset import FaceImage, SkippedFile
from ..embed.pipeline import embed_images
from ..errors import BackendUnavailableError, UsageError
from ..models.runtime import LoadOptions, load_encoder
from ..textsafe import key_bytes
from .ingest import ImageSource, SourceImage, collect_images, describe_image
from .parts import PartJob, PartResult, add_part
from .records import EncoderId, ImageRecord
from .shards import SHARD_PREFIX, name_bytes, name_text, write_shard

__all__ = [
    "LOCAL",
    "EmbedWorker",
    "RayEmbedding",
    "add_parts_on_ray",
    "connect_ray",
    "embed_with_ray",
    "ray_cluster",
]

#: The ``--ray`` value that starts a cluster of this machine for one run.
LOCAL = "local"
#: Seconds the actors (each loading its model) may take to start before a run fails.
ACTOR_START_S = 600


@dataclass
class RayEmbedding:
    """What :func:`embed_with_ray` did: the shards (all of them, ``written`` by this run), the images they hold,
    and how many shards each node wrote in this run."""

    out_dir: Path
    shards: list[str]
    images: int
    written: int = 0
    computed: int = 0
    nodes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_dir": str(self.out_dir),
            "shards": len(self.shards),
            "written": self.written,
            "reused": len(self.shards) - self.written,
            "nodes": len(self.nodes),
        }


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendUnavailableError('Ray is not installed: pip install "clipface[ray]"') from None
    return ray


def connect_ray(address: str, num_cpus: int | None = None) -> Any:
    """Connect this process to the Ray cluster at ``address`` (``host:port`` or ``ray://host:port``), or start one of
    this machine (``local``, with ``num_cpus``); the ``ray`` module. One clear error where nobody answers.

    A cluster started with token authentication (Ray's default) needs its token here as on every node
    (``RAY_AUTH_TOKEN``, or the file ``~/.ray/auth_token``), as Ray documents.
    """
    ray = _ray()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == LOCAL:
        kwargs["num_cpus"] = num_cpus
    else:
        _check_reachable(address)  # ray.init waits on an address nobody answers at
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError("ray", address, f"cannot connect to the Ray cluster: {str(e).splitlines()[0]}") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str, num_cpus: int | None = None) -> Iterator[dict[str, Any]]:
    """:func:`connect_ray` for one run: yields the cluster's resources, disconnects after (a session the caller
    opened, as in a notebook or a test, is used as it is and left open)."""
    ray = _ray()
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    connect_ray(address, num_cpus)
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own
        # every actor up before the first shard is handed out; a cluster that cannot hold them fails, not hangs
        context.wait_for_min_actors_s = ACTOR_START_S
        quiet.setLevel(logging.WARNING)
        yield ray.cluster_resources()
    finally:
        quiet.setLevel(level)
        ray.shutdown()


class EmbedWorker:
    """A Ray Data actor: holds one encoder; turns each batch of paths into one Parquet shard."""

    def __init__(
        self, model_name: str, out_dir: str, weights: str | None, align: str | None, on_no_face: str, device: str
    ) -> None:
        opts = LoadOptions(
            device=device, weights={model_name: weights} if weights else {}, aligner=align, on_no_face=on_no_face
        )
        self.encoder = load_encoder(model_name, opts)
        self.out_dir = Path(out_dir)
        self.meta = {
            **EncoderId.of(self.encoder).__dict__,
            "is_test_model": self.encoder.is_test_model,
            "align": align,
            "on_no_face": on_no_face,
        }
        import ray

        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = [
            SourceImage(Path(_text(p)), _text(r), _text(i) or None)
            for p, r, i in zip(batch["path"], batch["relpath"], batch["identity"])
        ]
        h = hashlib.sha256(f"{self.meta['fingerprint']}|{self.meta['preprocess_id']}".encode())
        h.update(key_bytes("\n".join(str(e.path) for e in entries)))
        shard = self.out_dir / f"{SHARD_PREFIX}{h.hexdigest()[:24]}.parquet"
        written = not shard.exists()
        if written:
            self._write(shard, entries)
        return {
            "shard": np.array([shard.name]),
            "images": np.array([len(entries)]),
            "written": np.array([written]),
            "node": np.array([self.node]),
        }

    def _write(self, shard: Path, entries: list[SourceImage]) -> None:
        described = [describe_image(e) for e in entries]
        skipped = [d for d in described if isinstance(d, SkippedFile)]
        records = {d.path: d for d in described if isinstance(d, ImageRecord)}
        result = embed_images(
            self.encoder,
            [FaceImage(Path(p), r.identity or "") for p, r in records.items()],
            None,
            workers=1,
            progress=False,
        )
        rows = [records[str(im.path)] for im in result.images]
        meta = {**self.meta, "skipped": [s.to_dict() for s in skipped + result.skipped]}
        write_shard(shard, rows, result.embeddings, meta)


def embed_with_ray(
    model_name: str,
    image_paths: ImageSource,
    out_dir: str | Path,
    num_workers: int = 2,
    batch_size: int = 256,
    weights: str | Path | None = None,
    *,
    align: str | None = None,
    on_no_face: str = "skip",
    device: str = "cpu",
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    progress: bool = False,
) -> RayEmbedding:
    """Embed ``image_paths`` (a folder, a dataset or files) on ``num_workers`` Ray actors into ``out_dir`` shards.

    Uses the running Ray cluster, or starts a local one (see :func:`ray_cluster`). Identities follow
    :func:`clipface.index.ingest.collect_images` (parent folder name in a folder layout). ``gpus_per_worker``:
    each actor's share of a GPU (its encoder then runs on ``cuda``). ``out_dir`` must be the same folder on every
    node (a shared file system); the image paths too.
    """
    ray = _ray()
    if gpus_per_worker > 0 and device == "cpu":
        device = "cuda"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, _ = collect_images(image_paths)
    if not entries:
        return RayEmbedding(out, [], 0)
    # file names travel as bytes: Arrow (under Ray Data) holds no string that is not UTF-8
    items = [
        {"path": name_bytes(str(e.path)), "relpath": name_bytes(e.relpath), "identity": name_bytes(e.identity or "")}
        for e in entries
    ]
    ds = ray.data.from_items(items).map_batches(
        EmbedWorker,
        fn_constructor_kwargs={
            "model_name": model_name,
            "out_dir": str(out),
            "weights": str(weights) if weights else None,
            "align": align,
            "on_no_face": on_no_face,
            "device": device,
        },
        batch_size=batch_size,
        batch_format="numpy",
        # one shard in flight per actor: shards spread over every actor, not queued at the first one up
        compute=ray.data.ActorPoolStrategy(size=num_workers, max_tasks_in_flight_per_actor=1),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )
    from tqdm import tqdm

    run = RayEmbedding(out, [], 0)
    shards: set[str] = set()
    with tqdm(total=len(items), desc="embedding on Ray", unit="img", disable=not progress) as bar:
        for row in ds.iter_rows():  # one row per shard, as each is finished
            shards.add(str(row["shard"]))
            run.images += int(row["images"])
            if bool(row["written"]):
                run.written += 1
                run.computed += int(row["images"])
                node = str(row["node"])
                run.nodes[node] = run.nodes.get(node, 0) + 1
            bar.update(int(row["images"]))
    run.shards = sorted(shards)
    return run


def _add_part_on_node(job: PartJob) -> PartResult:
    """:func:`~.parts.add_part` in a Ray task, recording the node."""
    import ray

    result = add_part(job)
    result.node = ray.get_runtime_context().get_node_id()
    return result


def add_parts_on_ray(jobs: list[PartJob]) -> list[PartResult]:
    """Each part of a build in parts (:mod:`.parts`) added by a Ray task of one CPU on the connected cluster."""
    ray = _ray()
    task = ray.remote(num_cpus=1)(_add_part_on_node)
    return list(ray.get([task.remote(j) for j in jobs]))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connection to the cluster's ``host:port`` (Ray Client's ``ray://host:port`` too), or one clear error."""
    import socket

    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError("ray", address, "give the cluster's host:port (as `ray start --head` prints it) or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError("ray", address, f"no Ray cluster answers there ({e.strerror or e})") from None


def _text(value: object) -> str:
    return name_text(value) if isinstance(value, (bytes, str)) else str(value)  # type: ignore[return-value]
