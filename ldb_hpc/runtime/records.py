"""The typed records of a trajectory run: what ``run.json`` says (:class:`RunRecord`), what set-up hands every
rank (:class:`RunState`), what each rank reports (:class:`RankStats`) and the run summary (:class:`RunSummary`).

They are dataclasses between modules; JSON is written and parsed here only, at the file boundary
(:meth:`RunRecord.to_json` / :meth:`RunRecord.from_json`, :meth:`RunSummary.to_json`), so a renamed field fails
at review, not in a user's run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum

from ldb_hpc.geometry.contacts import CUTOFF, NAMED, CloseContactReport, close_pair_text
from ldb_hpc.runtime.sharding import ChunkPlan

FORMAT = "ldb-hpc run 1"


class IOMode(str, Enum):
    """How rows reach the output: one file per shard + a master of virtual datasets, or one collective file."""

    SHARDS = "shards"
    MPIO = "mpio"


def content_hash(*parts: bytes) -> str:
    """A short sha256 of ``parts`` (each followed by a NUL), as run records and identities write it."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()[:16]


@dataclass(frozen=True)
class InputIdentity:
    """What identifies a CG input: path, byte size, frames, residues, hashes of the topology and of the first and
    last frames (ldb_hpc.runtime.resume.input_identity)."""

    path: str
    size: int
    n_frames: int
    n_residues: int
    topology_hash: str
    frames_hash: str

    def differences(self, other: InputIdentity) -> list[str]:
        out = []
        for key, what in (("n_frames", "frames"), ("n_residues", "residues"), ("size", "bytes")):
            if getattr(self, key) != getattr(other, key):
                out.append(f"input {what} ({getattr(self, key)} vs {getattr(other, key)})")
        for key, what in (("topology_hash", "topology"), ("frames_hash", "coordinates")):
            if getattr(self, key) != getattr(other, key):
                out.append(f"input {what}")
        return out


@dataclass(frozen=True)
class ModelRef:
    name: str
    hash: str


@dataclass(frozen=True)
class Hydrogens:
    """``--hydrogens``: the provenance note (the disulfides, whose Cys get no HG, are the record's own
    :class:`Disulfides`)."""

    note: str


@dataclass(frozen=True)
class Disulfides:
    """The output's disulfide bonds (residue index pairs, one topology for every frame), the rule that decided them
    (``auto``: on frame 0's backbone; ``none``; ``list``: given by the user) and their residue labels."""

    pairs: tuple[tuple[int, int], ...]
    rule: str
    names: tuple[str, ...]

    def to_json(self) -> dict:
        return {"bonds": [list(p) for p in self.pairs], "rule": self.rule, "names": list(self.names)}

    @classmethod
    def from_json(cls, d: dict) -> Disulfides:
        return cls(tuple((int(i), int(j)) for i, j in d["bonds"]), str(d["rule"]), tuple(map(str, d["names"])))


@dataclass(frozen=True)
class RunRecord:
    """The content of ``run.json``: what is being computed. ``run_id`` hashes everything a resumed run must share."""

    run_id: str
    input: InputIdentity
    model: ModelRef
    seed: int
    samples: int
    io: IOMode
    plan: ChunkPlan
    sampling: dict
    has_cell: bool
    provenance: dict
    created: str
    hydrogens: Hydrogens | None = None
    input_note: str = ""  # what the input held beside the protein beads, dropped and counted
    disulfides: Disulfides | None = None  # the output topology's SG–SG bonds (None in records before them)

    @classmethod
    def create(cls, identity: InputIdentity, model, seed: int, samples: int, io: IOMode, plan: ChunkPlan,
               has_cell: bool, provenance: dict, hydrogens: Hydrogens | None = None,
               input_note: str = "", disulfides: Disulfides | None = None) -> RunRecord:
        """A new record for ``model`` (a backmapper: name, hash, sampling)."""
        sampling = dict(getattr(model, "sampling", {}))
        ident = {k: v for k, v in asdict(identity).items() if k != "path"}
        same = {"input": ident, "model_hash": model.hash, "seed": int(seed), "samples": int(samples),
                "io": IOMode(io).value, "plan": plan.to_dict(), "sampling": sampling}
        run_id = content_hash(json.dumps(same, sort_keys=True).encode())
        return cls(run_id, identity, ModelRef(model.name, model.hash), int(seed), int(samples), IOMode(io), plan,
                   sampling, bool(has_cell), provenance, time.strftime("%Y-%m-%dT%H:%M:%S"), hydrogens, input_note,
                   disulfides)

    def to_json(self) -> dict:
        out = {"format": FORMAT, "run_id": self.run_id, "input": asdict(self.input), "model": asdict(self.model),
               "seed": self.seed, "samples": self.samples, "io": self.io.value, "plan": self.plan.to_dict(),
               "sampling": self.sampling, "has_cell": self.has_cell, "provenance": self.provenance,
               "created": self.created}
        if self.hydrogens is not None:
            out["hydrogens"] = {"note": self.hydrogens.note}
        if self.input_note:
            out["input_note"] = self.input_note
        if self.disulfides is not None:
            out["disulfides"] = self.disulfides.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict) -> RunRecord:
        """The record of a parsed ``run.json`` (KeyError, TypeError or ValueError when it is not one)."""
        h = d.get("hydrogens")
        hydrogens = None if h is None else Hydrogens(str(h["note"]))  # an older record's copy of the pairs: unread
        return cls(str(d["run_id"]), InputIdentity(**d["input"]), ModelRef(**d["model"]), int(d["seed"]),
                   int(d["samples"]), IOMode(d["io"]), ChunkPlan.from_dict(d["plan"]), dict(d.get("sampling", {})),
                   bool(d.get("has_cell", False)), dict(d.get("provenance", {})), str(d.get("created", "")),
                   hydrogens, str(d.get("input_note", "")),
                   None if d.get("disulfides") is None else Disulfides.from_json(d["disulfides"]))

    def differences(self, current: RunRecord) -> list[str]:
        """What differs between this (recorded) run and ``current``, as short phrases ("seed 0 vs 1"); empty when
        a resume may continue it."""
        out = self.input.differences(current.input)
        if self.model.hash != current.model.hash:
            out.append(f"model ({self.model.name} {self.model.hash} vs {current.model.name} {current.model.hash})")
        for key in ("seed", "samples", "io", "sampling"):
            mine, theirs = getattr(self, key), getattr(current, key)
            if mine != theirs:
                show = (lambda v: v.value) if key == "io" else (lambda v: v)
                out.append(f"{key} ({show(mine)} vs {show(theirs)})")
        if (self.hydrogens is None) != (current.hydrogens is None):
            out.append(f"--hydrogens ({'on' if self.hydrogens is not None else 'off'} vs "
                       f"{'on' if current.hydrogens is not None else 'off'})")
        if self.disulfides != current.disulfides:
            show = (lambda d: ",".join(d.names) or "none" if d is not None else "not recorded")  # noqa: E731
            out.append(f"disulfides ({show(self.disulfides)} vs {show(current.disulfides)})")
        return out


@dataclass(frozen=True)
class RunState:
    """What set-up (rank 0) hands every rank: the record to work from, the run folder, and whether the output is
    already complete (nothing to do)."""

    record: RunRecord
    folder: str
    complete: bool


def sum_calls(per_rank) -> dict[str, int]:
    """Fused-op call counts ({implementation: calls}) summed over ranks."""
    out: dict[str, int] = {}
    for calls in per_rank:
        for name, n in calls.items():
            out[name] = out.get(name, 0) + int(n)
    return dict(sorted(out.items()))


def kernel_text(kernels: list[str], calls: dict[str, int]) -> str:
    """``cpu kernels, 812 calls`` for the run line; calls that fell back to the torch reference in a run on other
    kernels are named: ``triton kernels, 800 calls + 12 on the torch reference``."""
    text = f"{', '.join(kernels)} kernels"
    fused, ref = sum(n for k, n in calls.items() if k != "reference"), calls.get("reference", 0)
    if kernels == ["reference"]:
        return text + f", {ref:,} call{'s' * (ref != 1)}"
    text += f", {fused:,} call{'s' * (fused != 1)}"
    return text + (f" + {ref:,} on the torch reference" if ref else "")


@dataclass
class RankStats:
    """What one rank did in a run."""

    rank: int
    shards: list[int]
    chunks: int
    frames: int
    read_s: float
    compute_s: float
    write_s: float
    wall_s: float
    threads: int
    device: str
    kernels: str
    close_contacts: CloseContactReport
    peak_rss_mb: float
    disulfide_frames: int = 0  # frames whose own geometry disagrees with the disulfide topology
    disulfide_first: list[int] = field(default_factory=list)  # the first of them (global frame indices)
    kernel_calls: dict = field(default_factory=dict)  # fused-op calls by implementation (ldb_hpc.ops.kernel_calls)

    def to_json(self) -> dict:
        out = asdict(self)
        del out["close_contacts"]  # merged over the ranks in the summary
        return out


@dataclass
class RunSummary:
    """The summary of a trajectory run, written as ``OUT.summary.json`` (or the shard's, for ``--shard I/N``)."""

    output: str
    input: str
    io: IOMode
    shard: list[int] | None
    frames: int
    samples: int
    rows: int
    frames_this_run: int
    residues: int
    batch_frames: int
    n_shards: int
    ranks: int
    threads: int
    model: ModelRef
    seed: int
    wall_s: float
    devices: list[str]
    close_contacts: CloseContactReport
    kernels: list[str]
    frames_per_s: float
    residue_frames_per_s: float
    peak_rss_mb_max: float
    per_rank: list[RankStats]
    published: dict = field(default_factory=dict)  # what publishing the output recorded (runtime.publish)
    summary_path: str | None = None
    input_note: str = ""  # what the input held beside the protein beads, dropped and counted
    disulfides: dict = field(default_factory=dict)  # the bonds, their rule, the frames that disagree

    @property
    def kernel_calls(self) -> dict[str, int]:
        """Fused-op calls of every rank, by implementation."""
        return sum_calls(s.kernel_calls for s in self.per_rank)

    @property
    def topology_pdb(self) -> str | None:
        return self.published.get("topology_pdb")

    def to_json(self) -> dict:
        out = {"output": self.output, "input": self.input, "io": self.io.value, "shard": self.shard,
               "frames": self.frames, "samples": self.samples, "rows": self.rows,
               "frames_this_run": self.frames_this_run, "residues": self.residues,
               "batch_frames": self.batch_frames, "n_shards": self.n_shards, "ranks": self.ranks,
               "threads": self.threads, "model": asdict(self.model), "seed": self.seed, "wall_s": self.wall_s,
               "devices": self.devices, "close_contacts": self.close_contacts.to_json(), "kernels": self.kernels,
               "kernel_calls": self.kernel_calls, "frames_per_s": self.frames_per_s,
               "residue_frames_per_s": self.residue_frames_per_s,
               "peak_rss_mb_max": self.peak_rss_mb_max, "per_rank": [s.to_json() for s in self.per_rank]}
        if self.input_note:
            out["input_note"] = self.input_note
        if self.disulfides:
            out["disulfides"] = self.disulfides
        out.update(self.published)
        return out


# ----------------------------------------------------------------------------------------------
# the many-files run (ldb_hpc.runtime.batch)


class FileStatus(str, Enum):
    WRITTEN = "written"
    FAILED = "failed"  # ``error`` says why
    SKIPPED = "skipped"  # ``note``: named twice
    PRESENT = "present"  # its output exists and ``resume`` was asked


@dataclass
class FileResult:
    """What became of one input file (:class:`FileStatus`)."""

    index: int
    input: str
    output: str | None
    status: FileStatus = FileStatus.WRITTEN
    frames: int = 0
    residues: int = 0
    rows: int = 0
    error: str | None = None
    note: str = ""
    close_contact_rows: int = 0
    closest: str | None = None

    def to_json(self) -> dict:
        return dict(asdict(self), status=self.status.value)


@dataclass
class StructuresSummary:
    """The summary of a many-files run (rank 0), written as ``OUTDIR/backmap.summary.json``."""

    outdir: str | None
    format: str
    files: list[FileResult]
    failed: int  # over every rank
    samples: int
    model: dict  # name, hash, steps
    seed: int
    batch_frames: int
    ranks: int
    threads: int
    wall_s: float
    per_rank: list[dict]
    summary_path: str | None = None

    @property
    def devices(self) -> list[str]:
        return sorted({s["device"] for s in self.per_rank})

    @property
    def kernels(self) -> list[str]:
        return sorted({s["kernels"] for s in self.per_rank})

    @property
    def kernel_calls(self) -> dict[str, int]:
        return sum_calls(s.get("kernel_calls", {}) for s in self.per_rank)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def done(self) -> list[FileResult]:
        return [f for f in self.files if f.status is FileStatus.WRITTEN]

    def count(self, status: FileStatus) -> int:
        return sum(f.status is status for f in self.files)

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.done())

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.done())

    @property
    def residues(self) -> int:
        return sum(f.residues for f in self.done())

    @property
    def residue_rows_per_s(self) -> float:
        return round(sum(f.residues * f.rows for f in self.done()) / max(self.wall_s, 1e-9), 1)

    def contact_files(self) -> list[FileResult]:
        return [f for f in self.done() if f.close_contact_rows]

    def warning(self, where: str | None) -> str | None:
        """The one stderr line when written files keep close pairs, else None."""
        contacts = self.contact_files()
        if not contacts:
            return None
        text = close_pair_text(sum(f.close_contact_rows for f in contacts), CUTOFF, "written all the same",
                               f"{contacts[0].input} {contacts[0].closest}", files=len(contacts))
        return f"warning: {text}" + (f"; listed in {where}" if where else "")

    def to_json(self) -> dict:
        done, contacts = self.done(), self.contact_files()
        return {
            "mode": "structures", "outdir": self.outdir, "format": self.format, "inputs": len(self.files),
            "written": len(done), "failed": self.failed, "skipped": self.count(FileStatus.SKIPPED),
            "present": self.count(FileStatus.PRESENT), "frames": self.frames, "samples": self.samples,
            "rows": self.rows, "residues": self.residues, "residue_rows": sum(f.residues * f.rows for f in done),
            "model": self.model, "seed": self.seed, "batch_frames": self.batch_frames, "ranks": self.ranks,
            "threads": self.threads, "devices": self.devices, "kernels": self.kernels,
            "kernel_calls": self.kernel_calls, "wall_s": self.wall_s,
            "residue_rows_per_s": self.residue_rows_per_s,
            "close_contacts": {"cutoff_A": CUTOFF, "files": len(contacts),
                               "rows": sum(f.close_contact_rows for f in contacts),
                               "named": [{"input": f.input, "rows": f.close_contact_rows, "closest": f.closest}
                                         for f in contacts[:NAMED]]},
            "per_rank": self.per_rank, "files": [f.to_json() for f in self.files],
        }


@dataclass
class BatchOutcome:
    """What :func:`run_batch` returns on every rank: the failures over all ranks (the exit code), and on rank 0
    the summary."""

    failed: int
    summary: StructuresSummary | None = None
