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


class IdealBackmapper:
    """``--model ideal``: the non-learned baseline (ldb_hpc.model.ideal); deterministic."""

    name = "ideal"
    steps = 0
    deterministic = True

    def __init__(self):
        import hashlib

        from ldb_hpc.chem.ideal import GEOMETRY_FILE
        from ldb_hpc.model.ideal import TABLE_FILE, load_tables

        self.tables = load_tables()
        h = hashlib.sha256()
        for path in (TABLE_FILE, GEOMETRY_FILE):
            h.update(path.read_bytes())
        self.hash = "sha256:" + h.hexdigest()[:16]

    def backmap(self, ca: torch.Tensor, residues: Residues, frame_index: torch.Tensor, samples: int = 1,
                seed: int = 0, temperature: float | None = None) -> torch.Tensor:
        from ldb_hpc.model.ideal import backmap_ideal

        with torch.no_grad():
            pos = backmap_ideal(ca, torch.as_tensor(residues.restype), torch.as_tensor(residues.segment),
                                self.tables)
        return pos[:, None].expand(-1, samples, -1, -1, -1)


def load_model(spec: str | None = None):
    """The backmapper named by ``spec``: 'ideal', a model directory, or None for the default model."""
    if spec is None or spec == "ideal":
        return IdealBackmapper()
    import os

    if not os.path.exists(spec):
        raise InputError(f"model not found: {spec} (use --model ideal for the non-learned baseline)")
    raise InputError(f"not an ldb-hpc model: {spec} (this version ships only --model ideal)")
