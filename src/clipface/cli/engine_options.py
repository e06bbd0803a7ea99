"""The search engine's option groups: the index, queries, the server and audits (see :mod:`.options`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from .expand import REQUIRED, flag, group


@group
class IndexOption:
    index: Path = flag(REQUIRED, "--index", "-i", help="Index folder.")


@group
class IngestOptions(IndexOption):
    images: str = flag(
        REQUIRED,
        "--images",
        help="Folder of images (identity sub-folders, or a flat folder), or bundled:lfw-mini.",
    )


@group
class BuildOptions:
    """What a new index holds and how it searches."""

    kind: str = flag(
        "auto",
        "--kind",
        help="auto (exact up to 50k images, IVF with 4-bit PQ fast-scan codes and exact re-ranking above), flat, "
        "ivfpqfs, ivfsq8, ivfpq or hnsw (HNSW over 8-bit codes).",
    )
    face_model: Optional[str] = flag(
        None,
        "--face-model",
        help="Also keep the faces of every image, embedded by this face recogniser (e.g. dlib), beside the image "
        "vectors: for `serve --opt-out-faces` and search by face (default: the model itself when it is a face "
        "recogniser and --faces is given).",
    )
    second_face_model: Optional[str] = flag(
        None,
        "--second-face-model",
        help="Also keep the same faces embedded by a second face recogniser (e.g. facenet-casia beside dlib): "
        "`serve --opt-out-faces` then removes a person by the two models' fused scores, the calibrated default "
        "(fewer other people removed at the same leak).",
    )
    faces: Optional[str] = flag(
        None,
        "--faces",
        help="Which faces of an image the face vectors hold: central (the one the front end chooses) or all "
        "(every detected face: a group photo is found through each of its people).",
    )
    overwrite: bool = flag(False, "--overwrite", help="Replace an existing index in the folder.")
    memory_budget: Optional[str] = flag(
        None,
        "--memory-budget",
        help="Most RAM the served codes may take (e.g. 16G, 500M; K/M/G/T are powers of 1024): auto's choice if it "
        "fits, else smaller PQ codes, else refused before any work. Counts codes, ids and centroids; vectors.f32 is "
        "memory-mapped and not counted.",
    )


@group
class RayAddress:
    ray: Optional[str] = flag(
        None,
        "--ray",
        help="Run on a Ray cluster: its address (host:port, as `ray start --head` prints it) or local (a cluster "
        "of this machine, for this run). Files named must be at the same paths on every node.",
    )


@group
class RayOptions(RayAddress):
    """Where a build embeds: this process, or a Ray cluster."""

    ray_workers: int = flag(2, "--ray-workers", help="Ray actors embedding at once, each holding one model.")
    ray_gpus_per_worker: float = flag(
        0.0, "--ray-gpus-per-worker", help="Each Ray actor's share of a GPU (0: CPU only; above 0 it runs on cuda)."
    )
    ray_shard_size: int = flag(256, "--ray-shard-size", help="Images per embedding shard (one Ray task each).")
    ray_shards: Optional[Path] = flag(
        None,
        "--ray-shards",
        help="Folder of the embedding shards (default: the index folder's name plus .shards, beside it); a rerun "
        "reuses the shards already written.",
    )


@group
class ShardOptions(RayAddress):
    """Serving the vectors as shards on Ray Serve."""

    shards: Optional[int] = flag(
        None,
        "--shards",
        help="Serve the image vectors as this many shards on Ray Serve (needs --ray), each a deployment over a "
        "slice of the rows; answers merged by score.",
    )
    shard_replicas: int = flag(1, "--shard-replicas", help="Replicas of each shard's deployment.")
    shard_timeout: float = flag(
        10.0, "--shard-timeout", help="Seconds to wait for a shard; answers say how many shards answered."
    )


@group
class JsonOption:
    as_json: bool = flag(False, "--json", help="Machine-readable output.")


@group
class TopK:
    k: int = flag(10, "-k", help="Number of results.")


@group
class QueryOptions(TopK, JsonOption):
    text: Optional[str] = flag(None, "--text", "-t", help="Text query (CLIP models).")
    image: Optional[Path] = flag(None, "--image", help="Photo query (any model).")


@group
class ServeOptions:
    """Where the server listens, who may ask, and what it never answers."""

    host: str = flag("127.0.0.1", "--host", help="Interface to listen on.")
    port: int = flag(8000, "--port", help="TCP port.")
    no_auth: bool = flag(False, "--no-auth", help="Serve without an API token (anyone who can connect can search).")
    opt_out: Optional[Path] = flag(
        None, "--opt-out", help="File of identities or image SHA-256s (one a line) never shown."
    )
    opt_out_faces: Optional[Path] = flag(
        None,
        "--opt-out-faces",
        help="Folder with one sub-folder of photos per person removed from every answer by face (images whose "
        "face matches at the face model's LFW threshold at FAR 1e-3, labelled or not); needs face vectors "
        "(index build --face-model) or a face-recogniser index.",
    )
    opt_out_faces_threshold: Optional[float] = flag(
        None,
        "--opt-out-faces-threshold",
        help="Cosine at which a face's score removes it (default: the face model's calibrated threshold for the rule, "
        "else its LFW threshold at FAR 1e-3; higher removes fewer other people and misses more of theirs, see "
        "benchmarks/results/opt_out_calibration.md).",
    )
    opt_out_faces_rule: Optional[str] = flag(
        None,
        "--opt-out-faces-rule",
        help="How a face is scored against a person's enrolment photos: any (best match), second (two must "
        "agree), mean, centroid, or fused (the face model's and the second face model's scores together, for an "
        "index built with --second-face-model). Default: fused where the index keeps the second model that dlib's "
        "fusion is calibrated with, else the face model's calibrated rule (dlib's mean); see "
        "benchmarks/results/opt_out_calibration.md.",
    )
    rate_limit: float = flag(60.0, "--rate-limit", help="API requests per minute per client IP (0: unlimited).")
    max_upload_mb: float = flag(10.0, "--max-upload-mb", help="Largest request body, in MB.")
    header_timeout: float = flag(
        10.0, "--header-timeout", help="Seconds a client has to send its request line and headers (slowloris)."
    )
    max_connections: int = flag(
        1000,
        "--max-connections",
        help="Connections and requests served at once; beyond, new ones are answered 503 at once (file descriptors "
        "stay bounded).",
    )
    forwarded_allow_ips: Optional[str] = flag(
        None,
        "--forwarded-allow-ips",
        help="Proxies whose X-Forwarded-For is trusted (comma-separated IPs; default: none).",
    )
    clip_retrieval: bool = flag(
        False,
        "--clip-retrieval",
        help="Also serve clip-retrieval's back-end API (/knn-service, /metadata, /indices-list).",
    )
    cors_origins: Optional[List[str]] = flag(
        None, "--cors-origin", help="A web origin allowed to call the API from a browser (repeatable)."
    )


@group
class AuditOptions(TopK):
    """The engine audited, the person, and what the audit may fetch."""

    engine: str = flag(REQUIRED, "--engine", help="The engine's knn-service URL (clip-retrieval's API).")
    indice: str = flag(REQUIRED, "--indice", help="The engine's index to search (see its /indices-list).")
    person: Path = flag(REQUIRED, "--person", help="Folder of the person's photos.")
    name: Optional[str] = flag(None, "--name", help="The person's full name (default: the folder's name).")
    no_fetch: bool = flag(False, "--no-fetch", help="Do not download result images from their URLs.")
    allow_private_urls: bool = flag(
        False,
        "--allow-private-urls",
        help="Also fetch result urls at loopback and private addresses (by default only public ones: an engine "
        "must not steer the auditor into its own network).",
    )
    read_local_paths: bool = flag(
        False,
        "--read-local-paths",
        help="Read a result's image_path from this machine's disk (regular files under 20 MB only); off by default.",
    )
    deduplicate: bool = flag(
        True,
        "--deduplicate/--no-deduplicate",
        help="Ask the engine to merge duplicate images, as clip-retrieval's ClipClient and LAION's page do.",
    )
    use_safety_model: bool = flag(
        True, "--safety-model/--no-safety-model", help="Ask the engine to filter unsafe images, as ClipClient does."
    )
    deadline: float = flag(1800.0, "--deadline", help="Seconds the whole audit may take; later queries are not sent.")
    user_agent: Optional[str] = flag(
        None, "--user-agent", help="User-Agent of the result fetches (default: an ordinary browser's)."
    )
    token: Optional[str] = flag(None, "--token", help="Bearer token for the engine (default $CLIPFACE_API_TOKEN).")
