"""The one compute step of every backmap: the model, the output extras, the close-contact check.

:class:`Engine` holds a loaded backmapper on its device. :meth:`Engine.rows` is the only place in the package
(outside ``ldb_hpc/model``) that calls ``model.backmap``: the CLI's trajectory run (ldb_hpc.runtime.driver), its
many-files run (ldb_hpc.runtime.batch) and the Python API (ldb_hpc.api) all compute through it, so an option
added to :class:`~ldb_hpc.engine.job.Job` reaches all three.
"""

from __future__ import annotations

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPE_INDEX
from ldb_hpc.engine.job import Job
from ldb_hpc.geometry.contacts import CloseContacts

# SG is less than CA–CB + CB–SG = 3.4 Å from its CA: CYS pairs with CA–CA > 2 × 3.4 + 2.5 Å cannot be bonded.
_SS_CA_REACH = 9.3  # Å


class Engine:
    """A job's model loaded on one device.

    job: the :class:`Job`; device: a torch.device (default: the CPU); model: an already loaded backmapper
    (``job.model`` when it is one; else the one ``job.model`` names is loaded). Attributes ``model``, ``device``.
    """

    def __init__(self, job: Job, device=None):
        import torch

        from ldb_hpc.model.backmappers import load_backmapper

        self.job = job
        self.device = torch.device("cpu") if device is None else torch.device(device)
        if hasattr(job.model, "backmap"):
            self.model = job.model
        else:
            self.model = load_backmapper(job.model, steps=job.steps, temperature=job.temperature,
                                         cg=job.cg).to(self.device)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def hash(self) -> str:
        return self.model.hash

    @property
    def steps(self) -> int:
        return self.model.steps

    def provenance(self) -> dict:
        """What every output records of the model and sampling (without the input's name)."""
        out = {"model": self.name, "model_hash": self.hash, "seed": self.job.seed, "steps": self.steps,
               "samples": self.job.samples}
        if self.job.cg != "ca":
            out["cg"] = self.job.cg
        return out

    def rows(self, ca: np.ndarray, residues: Residues, frame_index: np.ndarray,
             protonation: Protonation | None = None, contacts: CloseContacts | None = None,
             frame_start: int = 0) -> np.ndarray:
        """All samples of frames ``ca`` [n, L, 3] float32 Å (the beads of the job's mapping: CAs, or residue centres
        of mass the model places CAs from), whose global frame indices are ``frame_index`` [n]
        int64 (random numbers are keyed by them: a frame's rows do not depend on the batch it is in).

        Returns [n, S, L, K, 3] float32 Å on the CPU: K = 14 heavy-atom slots, or 14 + NUM_EXTRA with
        ``protonation`` (OXT and hydrogens placed on the device, ldb_hpc.geometry.hydrogens). The model is called
        on at most ``job.batch_frames`` frames at a time. ``contacts``: the log that checks every row for
        heavy-atom pairs closer than its cutoff (frames named from ``frame_start``).
        """
        import torch

        B, S = self.job.batch_frames, self.job.samples
        ca = torch.from_numpy(np.ascontiguousarray(ca, dtype=np.float32))
        index = torch.from_numpy(np.ascontiguousarray(frame_index, dtype=np.int64))
        parts = []
        for a in range(0, len(ca), B):
            pos = self.model.backmap(ca[a: a + B].to(self.device), residues, index[a: a + B].to(self.device), S,
                                     self.job.seed).detach()
            if protonation is not None:
                from ldb_hpc.geometry.hydrogens import place_extra

                pos = place_extra(pos, residues.restype, residues.segment, protonation)
            parts.append(pos.to("cpu", torch.float32).numpy())
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if contacts is not None:
            contacts.check(frame_start, out[..., :NUM_SLOTS, :])
        return out

    def disulfides(self, ca0: np.ndarray, residues: Residues) -> list[tuple[int, int]]:
        """The disulfides of a trajectory, found on its first frame's backmap (sample 0; CYS whose SG atoms are at
        most 2.5 Å apart): residue index pairs. ca0: [1, L, 3] float32 Å. The backmap is skipped when no two CYS
        CAs are close enough to bond."""
        from ldb_hpc.geometry.hydrogens import disulfide_pairs

        cys = ca0[0, residues.restype == RESTYPE_INDEX["CYS"]]
        if len(cys) < 2:
            return []
        if self.job.cg == "ca":  # other beads are not where the CA is: no prefilter there
            gaps = np.linalg.norm(cys[:, None] - cys[None], axis=-1) + 99 * np.eye(len(cys))
            if gaps.min() > _SS_CA_REACH:
                return []
        return disulfide_pairs(self.rows(ca0, residues, np.zeros(1, dtype=np.int64))[0, 0], residues.restype)
