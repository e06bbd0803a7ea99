"""Every command-line option, declared once: an ``Annotated`` alias each, used as a command's parameter type."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

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
    str,
    typer.Option(
        "--precision", help="fp32; int8 (dynamic quantisation, --backend onnx); bf16 (torch, CPU or CUDA); fp16 (CUDA)."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

# -- tasks ----------------------------------------------------------------------------------------
Prompts = Annotated[
    str, typer.Option("--prompts", help='paper ("a photo of {}."), idia (21 templates) or a template with {}.')
]
Distractors = Annotated[
    Optional[int],
    typer.Option(
        "--distractors",
        help="Add this many realistic distractor names (seeded; default: as many as make the attack's pool of 1,000).",
    ),
]
Tau = Annotated[
    int, typer.Option("--tau", help="Identity inference: prompts that must agree for a name to be accepted.")
]
IdiaK = Annotated[
    Optional[str],
    typer.Option(
        "--idia-k",
        help="Identity inference: images per person voting (default all); several, comma-separated (1,3,5), "
        "give the curve over k (20 random draws each).",
    ),
]
NonMembers = Annotated[
    Optional[Path],
    typer.Option("--non-members", help="File of identity names (one a line) known not to be in the training data."),
]
NonMembersDir = Annotated[
    Optional[Path],
    typer.Option("--non-members-dir", help="Identity folders of people known not to be in the training data (added)."),
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
    Optional[int],
    typer.Option(
        "--jitter",
        help="Move each edge of the face box by up to this many pixels at every step, so the cloak survives the face "
        "being detected again (default 6, the robust setting; 0 with --published).",
    ),
]
Eot = Annotated[
    Optional[str],
    typer.Option("--eot", help="Also average over resize and/or jpeg (comma-separated), as photo sites apply them."),
]
Published = Annotated[
    bool,
    typer.Option("--published", help="The methods as published: the exact face crop, no jitter, no transformation."),
]
RepostJpeg = Annotated[
    Optional[int],
    typer.Option(
        "--repost-jpeg", help="Targets see each cloak re-encoded as JPEG of this quality, as photo sites serve it."
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

FaceModel = Annotated[
    Optional[str],
    typer.Option(
        "--face-model",
        help="Also keep the faces of every image, embedded by this face recogniser (e.g. dlib), beside the image "
        "vectors: for `serve --opt-out-faces` and search by face (default: the model itself when it is a face "
        "recogniser and --faces is given).",
    ),
]
Faces = Annotated[
    Optional[str],
    typer.Option(
        "--faces",
        help="Which faces of an image the face vectors hold: central (the one the front end chooses) or all "
        "(every detected face: a group photo is found through each of its people).",
    ),
]
OptOutFaces = Annotated[
    Optional[Path],
    typer.Option(
        "--opt-out-faces",
        help="Folder with one sub-folder of photos per person removed from every answer by face (images whose "
        "face matches at the face model's LFW threshold at FAR 1e-3, labelled or not); needs face vectors "
        "(index build --face-model) or a face-recogniser index.",
    ),
]
OptOutFacesThreshold = Annotated[
    Optional[float],
    typer.Option(
        "--opt-out-faces-threshold",
        help="Cosine at which a face matches an enrolled person (default: the face model's LFW threshold at FAR "
        "1e-3; higher removes fewer other people and misses more of theirs, see benchmarks/results/opt_out_faces.md).",
    ),
]
ClipRetrieval = Annotated[
    bool,
    typer.Option(
        "--clip-retrieval", help="Also serve clip-retrieval's back-end API (/knn-service, /metadata, /indices-list)."
    ),
]
CorsOrigin = Annotated[
    Optional[List[str]],
    typer.Option("--cors-origin", help="A web origin allowed to call the API from a browser (repeatable)."),
]
Engine = Annotated[str, typer.Option("--engine", help="The engine's knn-service URL (clip-retrieval's API).")]
Indice = Annotated[str, typer.Option("--indice", help="The engine's index to search (see its /indices-list).")]
Person = Annotated[Path, typer.Option("--person", help="Folder of the person's photos.")]
PersonName = Annotated[
    Optional[str], typer.Option("--name", help="The person's full name (default: the folder's name).")
]
NoFetch = Annotated[bool, typer.Option("--no-fetch", help="Do not download result images from their URLs.")]
Token = Annotated[
    Optional[str], typer.Option("--token", help="Bearer token for the engine (default $CLIPFACE_API_TOKEN).")
]

# -- the main job ---------------------------------------------------------------------------------
ModelSets = Annotated[
    List[str],
    typer.Option("--models", help="Presets (default, paper, all) or model names, comma-separated or repeated."),
]
CloakMethods = Annotated[
    str, typer.Option("--cloak", help="Cloak methods for the poisoned half: fawkes,lowkey or none.")
]
CloakMode = Annotated[str, typer.Option("--cloak-mode", help="DSSIM budget of the study's cloaks: low, mid or high.")]
CloakSetting = Annotated[
    str, typer.Option("--cloak-setting", help="robust (the default cloaks), published (as the papers), or both.")
]
CloakPerPerson = Annotated[int, typer.Option("--cloak-per-person", help="Photos cloaked (and enrolled) per person.")]
StudyCloaked = Annotated[
    Optional[Path],
    typer.Option("--cloaked", help="Cloaks made elsewhere: NAME_cloaked.png / NAME_attacked.png beside NAME.jpg."),
]
Results = Annotated[Path, typer.Argument(help="A results.json written by clipface.")]
IncludeTestModels = Annotated[bool, typer.Option("--include-test-models", help="Also run test-tiny-random.")]
