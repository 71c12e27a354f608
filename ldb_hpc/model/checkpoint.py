"""Model checkpoints: a directory with ``config.json`` (architecture + metadata) and ``weights.safetensors``.

The content hash (sha256 over the config's architecture and the weight bytes) identifies a model in
provenance and in resume checks. Loading never touches the network. The metadata's ``stage`` is stored as the
stage's word (``"refine"``) and read back as a :class:`ldb_hpc.model.stages.Stage` (``model.stage``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ldb_hpc.errors import InputError
from ldb_hpc.model.stages import Stage

FORMAT = "ldb-hpc-model"
VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "weights" / "ldb-default"


def save_checkpoint(model, path: str | os.PathLike, metadata: dict | None = None) -> str:
    """Write ``model`` (an LDBModel) to directory ``path`` atomically; returns the content hash."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_w = path / ".weights.safetensors.tmp"
    save_file(state, str(tmp_w))
    config = {"format": FORMAT, "version": VERSION, "architecture": model.cfg.to_dict(), "metadata": metadata or {}}
    digest = _hash(config["architecture"], tmp_w.read_bytes())
    config["hash"] = digest
    tmp_c = path / ".config.json.tmp"
    tmp_c.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp_w, path / "weights.safetensors")
    os.replace(tmp_c, path / "config.json")
    return digest


def _hash(arch: dict, weight_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(arch, sort_keys=True).encode())
    h.update(weight_bytes)
    return "sha256:" + h.hexdigest()[:16]


def load_checkpoint(path: str | os.PathLike):
    """An LDBModel in eval mode from a checkpoint directory; InputError for missing, corrupt or incompatible ones.

    The model carries ``hash``, ``metadata`` (the stored dict) and ``stage`` (the Stage that trained it, None when
    the metadata names none)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ldb_hpc.model.ldb import LDBConfig, LDBModel

    path = Path(path)
    if not path.exists():
        raise InputError(f"model not found: {path} (use --model ideal for the non-learned baseline)")
    if not path.is_dir() or not (path / "config.json").is_file() or not (path / "weights.safetensors").is_file():
        raise InputError(f"not an ldb-hpc model: {path} (expected a directory with config.json and "
                         "weights.safetensors)")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"corrupt model config {path / 'config.json'}: {exc}") from None
    if config.get("format") != FORMAT or not isinstance(config.get("architecture"), dict):
        raise InputError(f"not an ldb-hpc model: {path} (config.json has no ldb-hpc architecture)")
    if int(config.get("version", -1)) > VERSION:
        raise InputError(f"model {path} has format version {config.get('version')}, newer than this ldb-hpc "
                         f"supports ({VERSION}); upgrade ldb-hpc")
    weight_bytes = (path / "weights.safetensors").read_bytes()
    if config.get("hash") and _hash(config["architecture"], weight_bytes) != config["hash"]:
        raise InputError(f"model {path}: weights do not match the hash in config.json (corrupt or edited)")
    try:
        cfg = LDBConfig(**config["architecture"])
    except TypeError as exc:
        raise InputError(f"model {path} is incompatible with this ldb-hpc: {exc}") from None
    try:
        state = load_file(str(path / "weights.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"corrupt model weights {path / 'weights.safetensors'}: {exc}") from None
    model = LDBModel(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"model {path} is incompatible with this ldb-hpc (missing {len(missing)}, unexpected "
                         f"{len(unexpected)} tensors, e.g. {(missing + unexpected)[:2]})")
    model.eval()
    model.hash = config.get("hash") or _hash(config["architecture"], weight_bytes)
    model.metadata = config.get("metadata", {})
    model.stage = Stage.of_metadata(model.metadata)
    return model
