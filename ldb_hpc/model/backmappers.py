"""The one interface the runtime sees: a backmapper turns batches of CA frames into atom14 samples.

Contract (every model, learned or not):
    ``model.backmap(ca, residues, frame_index, samples, seed, temperature=None) -> [B, S, L, 14, 3]``
    ca [B, L, 3] float32 Å; residues: :class:`ldb_hpc.chem.protein.Residues` (L residues); frame_index [B]
    int64, the *global* frame index of each row (random numbers are keyed by (seed, frame, sample, ...), so a
    frame's result does not depend on the batch or rank it landed in). Every slot of every residue type is
    filled; coordinates are float32 Å.
Attributes: ``name`` (str), ``hash`` (content hash, str), ``steps`` (sampling steps; 0 for a
deterministic model), ``deterministic`` (bool: samples of one frame are identical).
"""

from __future__ import annotations

import torch

from ldb_hpc.chem.protein import Residues
from ldb_hpc.errors import InputError
from ldb_hpc.geometry.resident import on_device


class IdealBackmapper:
    """``--model ideal``: the non-learned baseline (ldb_hpc.model.ideal); deterministic."""

    name = "ideal"
    steps = 0
    deterministic = True
    sampling: dict = {}  # sampling settings that change results (resume checks them)

    def __init__(self):
        import hashlib

        from ldb_hpc.chem.ideal_geometry import GEOMETRY_FILE
        from ldb_hpc.model.ideal import TABLE_FILE, load_tables

        self.tables = load_tables()
        self.device = torch.device("cpu")
        h = hashlib.sha256()
        for path in (TABLE_FILE, GEOMETRY_FILE):
            h.update(path.read_bytes())
        self.hash = "sha256:" + h.hexdigest()[:16]

    def to(self, device) -> IdealBackmapper:
        """Move the tables to ``device`` (inputs must then be on it too); returns self."""
        self.device = torch.device(device)
        self.tables = {k: v.to(self.device) for k, v in self.tables.items()}
        return self

    def backmap(self, ca: torch.Tensor, residues: Residues, frame_index: torch.Tensor, samples: int = 1,
                seed: int = 0, temperature: float | None = None) -> torch.Tensor:
        from ldb_hpc.model.ideal import backmap_ideal

        with torch.no_grad():
            pos = backmap_ideal(ca, on_device(residues.restype, ca.device),
                                on_device(residues.segment, ca.device),
                                self.tables)
        return pos[:, None].expand(-1, samples, -1, -1, -1)


class LDBBackmapper:
    """A trained Latent Diffusion Backmapping model (ldb_hpc.model.ldb) behind the runtime's interface."""

    deterministic = False

    def __init__(self, path, steps: int | None = None, temperature: float | None = None):
        from pathlib import Path

        from ldb_hpc.model.checkpoint import load_checkpoint

        self.model = load_checkpoint(path)
        self.name = Path(path).name
        self.hash = self.model.hash
        self.steps = self.model.cfg.steps if steps is None else int(steps)
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if temperature is not None and not (0.0 <= temperature <= 10.0):
            raise InputError(f"--temperature must be between 0 and 10, got {temperature}")
        self.temperature = temperature
        self.sampling = {"steps": self.steps, "temperature": temperature}
        self.device = torch.device("cpu")

    def to(self, device) -> LDBBackmapper:
        """Move the networks to ``device`` (inputs must then be on it too); returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def backmap(self, ca: torch.Tensor, residues: Residues, frame_index: torch.Tensor, samples: int = 1,
                seed: int = 0, temperature: float | None = None, pack: bool = True) -> torch.Tensor:
        """``pack=False``: without the clash repair (a caller that moves side chains after, and repairs then)."""
        temp = self.temperature if temperature is None else temperature
        with torch.no_grad():
            return self.model.sample(ca.float(), on_device(residues.restype, ca.device),
                                     on_device(residues.segment, ca.device),
                                     frame_index.long(), samples=samples, seed=seed, steps=self.steps,
                                     temperature=temp, pack=pack)


def default_model_path():
    """The model shipped in the package (ldb_hpc/weights/ldb-default), or None when it is absent."""
    from ldb_hpc.model.checkpoint import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


def load_backmapper(spec: str | None = None, steps: int | None = None, temperature: float | None = None,
                    cg: str = "ca"):
    """The backmapper named by ``spec``: 'ideal', a model directory, or None / 'default' for the default model of
    the coarse-grained mapping ``cg`` (for C-alpha traces the shipped LDB model, the ideal baseline if the package
    ships none; for another mapping the shipped placer of that mapping in front of the C-alpha model)."""
    from ldb_hpc.model.placement import PlacedBackmapper, default_placer_path, is_placer_dir, load_placer

    if cg != "ca":
        if spec == "ideal":
            raise InputError(f"--model ideal reads C-alpha traces; --cg {cg} needs a learned model")
        path = default_placer_path(cg) if spec in (None, "default") else spec
        if path is None:
            raise InputError(f"this ldb-hpc ships no model for --cg {cg}; pass --model DIR (ldb-hpc train placement)")
        if not is_placer_dir(path):
            raise InputError(f"model {path} reads C-alpha traces, not {cg} beads; pass a model for --cg {cg}")
        placer, config = load_placer(path)
        if placer.cfg.cg != cg:
            raise InputError(f"model {path} reads {placer.cfg.cg} beads, not {cg}; pass --cg {placer.cfg.cg}")
        inner = config.get("ca_model", "ldb-default")
        return PlacedBackmapper(path, load_backmapper(None if inner == "ldb-default" else inner, steps, temperature))
    if spec not in (None, "default", "ideal") and is_placer_dir(spec):
        raise InputError(f"model {spec} reads {load_placer(spec)[0].cfg.cg} beads, not C-alphas; pass --cg "
                         f"{load_placer(spec)[0].cfg.cg}")
    if spec == "ideal":
        return IdealBackmapper()
    if spec is None or spec == "default":
        path = default_model_path()
        return IdealBackmapper() if path is None else LDBBackmapper(path, steps, temperature)
    return LDBBackmapper(spec, steps, temperature)
