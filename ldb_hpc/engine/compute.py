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
from ldb_hpc.errors import InputError
from ldb_hpc.geometry.contacts import CloseContacts

_NAMED = 10  # frames named in a report


class DisulfideLog:
    """The frames whose own geometry disagrees with the output's disulfide topology (one topology per output: the
    bonds decided on frame 0, or given, are built in every frame; :func:`ldb_hpc.geometry.disulfides.disagreements`
    says which frames would have decided otherwise). ``count`` and the first ``first`` global frame indices."""

    def __init__(self):
        self.count = 0
        self.first: list[int] = []

    def add(self, frames: np.ndarray) -> None:
        self.count += len(frames)
        self.first = sorted(self.first + [int(f) for f in frames[:_NAMED]])[:_NAMED]

    def merge(self, other: "DisulfideLog") -> None:
        self.count += other.count
        self.first = sorted(self.first + other.first)[:_NAMED]


def parse_disulfide_list(text: str, residues: Residues) -> list[tuple[int, int]]:
    """``--disulfides A:12-A:40,B:3-B:77`` → residue index pairs; InputError for a residue that is not there, not a
    CYS, or in two bonds."""
    from ldb_hpc.io.topology import residue_labels

    index = {label: i for i, label in enumerate(residue_labels(residues.chain_id, residues.resseq, residues.icode))}
    pairs, seen = [], set()
    for item in (t.strip() for t in text.split(",")):
        parts = item.split("-") if item.count("-") == 1 else []
        if len(parts) != 2 or not all(":" in p for p in parts):
            raise InputError(f"--disulfides: '{item}' is not CHAIN:RESNUM-CHAIN:RESNUM (e.g. A:12-A:40)")
        ij = []
        for label in parts:
            if label not in index:
                raise InputError(f"--disulfides: residue {label} is not in the input")
            if residues.restype[index[label]] != RESTYPE_INDEX["CYS"]:
                raise InputError(f"--disulfides: residue {label} is {residues.resname[index[label]]}, not CYS")
            if index[label] in seen:
                raise InputError(f"--disulfides: residue {label} is in two bonds")
            seen.add(index[label])
            ij.append(index[label])
        if ij[0] == ij[1]:
            raise InputError(f"--disulfides: '{item}' bonds a residue to itself")
        pairs.append((min(ij), max(ij)))
    return sorted(pairs)


class Engine:
    """A job's model loaded on one device.

    job: the :class:`Job`; device: a torch.device (default: the CPU); model: an already loaded backmapper
    (``job.model`` when it is one; else the one ``job.model`` names is loaded). Attributes ``model``, ``device``.
    selection: how the repair stages choose their rows (ldb_hpc.geometry.resident): ``static`` (fixed slots,
    nothing read back until the batch's one transfer: the GPU's), ``exact`` (compacted: the CPU's), ``auto``
    (static on a GPU). ``recomputed`` counts the batches computed again exactly after a static overflow.
    """

    def __init__(self, job: Job, device=None, selection: str = "auto"):
        import torch

        from ldb_hpc import ops
        from ldb_hpc.model.backmappers import load_backmapper

        self.job = job
        self.device = torch.device("cpu") if device is None else torch.device(device)
        ops.require_kernels(self.device)  # a GPU without the Triton kernels is an error, never a silent fallback
        if selection not in ("auto", "static", "exact"):
            raise ValueError(f"selection must be auto, static or exact, got {selection!r}")
        self.static = self.device.type == "cuda" if selection == "auto" else selection == "static"
        self._caps: dict[str, int] = {}  # static slots per choice, learned from the batches so far
        self._seen: dict[str, int] = {}  # the most each choice needed in a batch that fitted
        self.recomputed = 0
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
             frame_start: int = 0, disulfide_log: DisulfideLog | None = None) -> np.ndarray:
        """All samples of frames ``ca`` [n, L, 3] float32 Å (the beads of the job's mapping: CAs, or residue centres
        of mass the model places CAs from), whose global frame indices are ``frame_index`` [n]
        int64 (random numbers are keyed by them: a frame's rows do not depend on the batch it is in).

        Returns [n, S, L, K, 3] float32 Å on the CPU: K = 14 heavy-atom slots, or 14 + NUM_EXTRA with
        ``protonation`` (OXT and hydrogens placed on the device, ldb_hpc.geometry.hydrogens). Every Cys SG is placed
        by ldb_hpc.geometry.disulfides: the bonds of ``residues.disulfides`` built, other SG kept apart. The model
        is called on at most ``job.batch_frames`` frames at a time. ``contacts``: the log that checks every row for
        heavy-atom pairs closer than its cutoff (frames named from ``frame_start``); ``disulfide_log``: the frames
        whose geometry disagrees with the disulfide topology.
        """
        import torch

        B = self.job.batch_frames
        ca = torch.from_numpy(np.ascontiguousarray(ca, dtype=np.float32))
        index = torch.from_numpy(np.ascontiguousarray(frame_index, dtype=np.int64))
        parts = []
        for a in range(0, len(ca), B):
            pos, bad, close = self._batch(ca[a: a + B], residues, index[a: a + B], protonation,
                                          disulfide_log is not None, contacts is not None)
            if disulfide_log is not None and bad is not None:  # None: no Cys
                disulfide_log.add(np.asarray(frame_index[a: a + B])[bad])
            if contacts is not None:
                contacts.check(frame_start + a, pos[..., :NUM_SLOTS, :], close)
            parts.append(pos)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _batch(self, ca, residues: Residues, index, protonation, want_bad: bool, want_close: bool, static=None):
        """One model call and its output extras → (rows [n, S, L, K, 3] float32 numpy, frames that disagree with
        the disulfide topology [n] bool numpy or None, rows the exact contact check must look at [n·S] int64
        numpy or None = all). Static selection reads the device back once: everything in one transfer."""
        import torch

        from ldb_hpc.geometry import resident
        from ldb_hpc.geometry.contacts import close_rows

        static = self.static if static is None else static
        selector = resident.Selector(static=static, caps=self._caps)
        with resident.use(selector):
            pos = self.sample(ca, residues, index)
            pos, bad = self._finish(pos, residues, protonation, want_bad)
            close = None
            if want_close and static:
                n, S, L = pos.shape[:3]
                close = close_rows(pos[..., :NUM_SLOTS, :].reshape(n * S, L, NUM_SLOTS, 3),
                                   resident.on_device(residues.restype, pos.device),
                                   resident.on_device(residues.segment, pos.device))
        if not static:
            return (pos.to("cpu", torch.float32).numpy(), None if bad is None else bad.cpu().numpy(), None)
        extras = [t for t in (bad, close) if t is not None]
        host, small = _read_back(pos, extras + [selector.overflow if selector.overflow is not None
                                                else torch.zeros((), dtype=torch.bool, device=pos.device)]
                                 + selector.counts)
        k = len(extras)
        flags = small[:k]
        overflowed = bool(small[k][0])
        counts = [int(c[0]) for c in small[k + 1:]]
        self._caps = selector.next_caps(counts, overflowed, self._seen)
        if overflowed:  # a static choice left rows out: this batch again, exactly (never a silent gap)
            self.recomputed += 1
            return self._batch(ca, residues, index, protonation, want_bad, want_close, static=False)
        bad = flags.pop(0).astype(bool) if want_bad and bad is not None else None
        close = np.nonzero(flags.pop(0))[0] if want_close else None
        return host, bad, close

    def sample(self, ca, residues: Residues, frame_index):
        """The model's rows for frames ``ca`` [n, L, 3] (tensor or array) with global indices ``frame_index`` [n]:
        [n, S, L, 14, 3] float32 on the engine's device, before :meth:`complete`."""
        import torch

        ca = torch.as_tensor(np.asarray(ca, dtype=np.float32) if isinstance(ca, np.ndarray) else ca)
        index = torch.as_tensor(frame_index, dtype=torch.int64)
        return self.model.backmap(ca.to(self.device), residues, index.to(self.device), self.job.samples,
                                  self.job.seed).detach()

    def complete(self, pos, residues: Residues, protonation: Protonation | None = None,
                 disulfide_log: DisulfideLog | None = None, frame_index: np.ndarray | None = None):
        """The model's rows ``pos`` [n, S, L, 14, 3] made output rows: every Cys SG placed
        (ldb_hpc.geometry.disulfides: the bonds of ``residues.disulfides`` built, other SG kept apart; frames whose
        own geometry disagrees with them go to ``disulfide_log``, named by ``frame_index``), then OXT and the
        hydrogens with ``protonation``."""
        pos, bad = self._finish(pos, residues, protonation, disulfide_log is not None)
        if bad is not None:
            disulfide_log.add(np.asarray(frame_index)[bad.cpu().numpy()])
        return pos

    def _finish(self, pos, residues: Residues, protonation: Protonation | None, want_bad: bool):
        """:meth:`complete` on the device: (rows, the disagreeing frames [n] bool tensor when ``want_bad`` and the
        protein has a Cys, else None)."""
        from ldb_hpc.geometry import disulfides as ss

        bad = None
        if (residues.restype == RESTYPE_INDEX["CYS"]).any():
            if want_bad:
                bad = ss.disagreements(pos[:, 0], residues.restype, residues.disulfides)
            pos = ss.build(pos, residues.restype, residues.disulfides)
        if protonation is not None:
            from ldb_hpc.geometry.hydrogens import place_extra

            pos = place_extra(pos, residues.restype, residues.segment, protonation)
        return pos, bad

    def topology(self, ca0: np.ndarray, residues: Residues) -> Residues:
        """``residues`` with the disulfide bonds of the job's rule (``job.disulfides``): ``none``; a list; or
        ``auto``, decided (ldb_hpc.geometry.disulfides.decide) on the backbone the model builds for the first
        frame ``ca0`` [1, L, 3] (sample 0), whose backmap is skipped when no two Cys can reach each other."""
        from ldb_hpc.geometry import disulfides as ss

        if self.job.disulfides != "auto":
            return self.decide(None, residues)
        cys = ca0[0, residues.restype == RESTYPE_INDEX["CYS"]]
        if len(cys) < 2:
            return residues.with_disulfides(())
        if self.job.cg == "ca":  # other beads are not where the CA is: no prefilter there
            gaps = np.linalg.norm(cys[:, None] - cys[None], axis=-1) + 99 * np.eye(len(cys))
            if gaps.min() > ss.CA_REACH:
                return residues.with_disulfides(())
        return self.decide(self.sample(ca0, residues, np.zeros(1, dtype=np.int64))[0, 0], residues)

    def decide(self, row, residues: Residues) -> Residues:
        """``residues`` with the disulfides of the job's rule, ``auto`` deciding on the model's row ``row``
        [L, 14, 3] (a tensor, before :meth:`complete`)."""
        from ldb_hpc.geometry import disulfides as ss

        rule = self.job.disulfides
        if rule == "none":
            return residues.with_disulfides(())
        if rule != "auto":
            return residues.with_disulfides(parse_disulfide_list(rule, residues))
        return residues.with_disulfides(ss.decide(row[..., :NUM_SLOTS, :], residues.restype))


def _read_back(pos, small: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """``pos`` (float) and ``small`` (bool or integer tensors, each at most 2**31 − 1) copied to the host in one
    transfer — one synchronisation of the device —: (pos as float32 numpy, each small tensor as int32 numpy [≥ 1])."""
    import torch

    flat = pos.detach().to(torch.float32).reshape(-1)
    parts = [t.reshape(-1).to(torch.int32) for t in small]
    sizes = [p.shape[0] for p in parts]
    packed = torch.cat([flat] + [p.view(torch.float32) for p in parts]).cpu().numpy()
    host = packed[: flat.shape[0]].reshape(pos.shape).copy()
    out, at = [], flat.shape[0]
    for n in sizes:
        out.append(packed[at: at + n].view(np.int32))
        at += n
    return host, out
