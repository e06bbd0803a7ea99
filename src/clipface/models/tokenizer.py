"""CLIP's byte-pair tokenizer built from the BPE file that ships with clipface.

The file ``assets/bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's vocabulary (MIT licence), the
same one that ``open_clip`` ships. Real checkpoints use the tokenizer saved with them; this one
serves the test model and any local weights directory saved without a tokenizer.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
import tempfile
from importlib import resources
from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def clean_text(text: str) -> str:
    """Text as open_clip cleans it before tokenising (``tokenizer.py``: ``basic_clean`` then ``whitespace_clean``).

    ``ftfy.fix_text`` (typographic quotes, ligatures, full-width letters, mojibake), HTML entities
    unescaped twice, runs of white space made one space. transformers' fast CLIP tokenizer does none of
    this, so "O’Connor" or "&amp;" tokenised differently from what CLIP was trained on.
    """
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_vocab_files(directory: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (Hugging Face format) for CLIP's 49,408-token BPE."""
    raw = resources.files("clipface.assets").joinpath(BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


@functools.lru_cache(maxsize=1)
def clip_tokenizer():  # -> transformers.CLIPTokenizer
    """A ``transformers`` CLIP tokenizer (max length 77) built offline from the bundled BPE file."""
    import inspect

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = write_vocab_files(Path(tmp))
        if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 4.x
            return CLIPTokenizer(vocab_file=str(vocab_path), merges_file=str(merges_path), model_max_length=77)
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = merges_path.read_text(encoding="utf-8").splitlines()[1:]
        return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges if m], model_max_length=77)
