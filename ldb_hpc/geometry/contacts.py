"""The clash guarantee: every output row is checked for non-bonded heavy-atom pairs closer than 1.2 Å (DESIGN.md's
clash definition: neither 1-2 nor 1-3; an SG–SG pair is bonded only when the output bonds it and it lies at
1.9–2.2 Å) after the model's repair and the disulfide build.

The model's repair removes them wherever moving side chains or peptide units can; what it cannot reach (e.g. two
CA atoms of the input closer than that, or two chains pressed into each other) is still written, never dropped,
but counted and named: each rank of a run (and each call of the Python API, each structure file) keeps a
:class:`CloseContacts` log; its :class:`CloseContactReport` merges with the other ranks' into the run summary and
gives the one warning line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.protein import Residues
from ldb_hpc.geometry import metrics, resident

CUTOFF = 1.2  # Å
NAMED = 20  # rows named in the summary (all are counted)
_MARGIN = 0.01  # Å: the device pre-check flags pairs up to this much beyond the cutoff (float noise never hides one)


def _bonded_tables():
    """(intra [21, 14, 14], after [21, 14, 14]) bool: the slot pairs of one residue that are 1-2 or 1-3 (two
    bonds or fewer apart, the atom with itself included), and the 1-2 / 1-3 pairs across the peptide bond from a
    residue (first index: its C, CA, O) to the next residue of the given type (second index: N, CA, and CD of a
    Pro). The clash rule leaves these out; so may the pre-check."""
    if _TABLES:
        return _TABLES
    n = rc.NUM_SLOTS
    intra = np.zeros((rc.NUM_RESTYPES, n, n), dtype=bool)
    for r in range(rc.NUM_RESTYPES):
        adj = np.eye(n, dtype=bool)
        for k in np.nonzero(rc.BOND_MASK[r])[0]:
            a, b = rc.BOND_SLOTS[r, k]
            adj[a, b] = adj[b, a] = True
        intra[r] = (adj.astype(int) @ adj.astype(int)) > 0  # within two bonds
    after = np.zeros((rc.NUM_RESTYPES, n, n), dtype=bool)
    n_, ca_, c_, o_ = 0, 1, 2, 3  # backbone slots
    after[:, c_, n_] = after[:, ca_, n_] = after[:, o_, n_] = after[:, c_, ca_] = True
    after[rc.RESTYPE_INDEX["PRO"], c_, rc.ATOM14["PRO"].index("CD")] = True
    _TABLES.extend([intra, after])
    return _TABLES


_TABLES: list = []


def close_rows(pos, restype, segment, cutoff: float = CUTOFF):
    """Which rows of pos [R, L, 14, 3] Å (a tensor on any device; ``restype``, ``segment`` [L] on the same device)
    have two present atoms closer than ``cutoff`` (+ a 0.01 Å margin) that are not 1-2 or 1-3 within a residue or
    across a peptide bond — on the device, without reading it back. Every pair the clash rule counts is such a
    pair, so the exact check on the host (:meth:`CloseContacts.check`) needs to look only at these rows. Residue
    pairs are prefiltered by centre distance against the residues' radii and chosen through the batch's selector
    (ldb_hpc.geometry.resident). [R] bool."""
    import torch

    R, L = pos.shape[:2]
    dev = pos.device
    cut = cutoff + _MARGIN
    intra, after = (resident.on_device(t, dev) for t in _bonded_tables())
    exists = resident.on_device(rc.SLOT_MASK, dev)[restype]  # [L, 14]
    m = exists.to(pos.dtype)
    centre = (pos * m[..., None]).sum(-2) / m.sum(-1).clamp(min=1)[:, None]  # [R, L, 3]
    radius = torch.where(exists, (pos - centre[..., None, :]).norm(dim=-1), 0.0).amax(-1)  # [R, L]
    has = exists.any(-1)
    upper = torch.ones(L, L, dtype=torch.bool, device=dev).triu() & has[:, None] & has[None, :]
    cand = (torch.cdist(centre, centre) <= radius[:, :, None] + radius[:, None, :] + cut) & upper  # [R, L, L]
    pairs = resident.current().select("contacts", cand, first=8 * R * L)  # a residue meets a few neighbours
    out = torch.zeros(R, dtype=torch.int32, device=dev)
    if pairs.surely_empty:
        return out > 0
    f, i, j = resident.unravel(pairs.idx, cand.shape)
    same = (i == j)[:, None, None]
    linked = ((j == i + 1) & (segment[i] == segment[j]))[:, None, None]
    skip = (same & intra[restype[i]]) | (linked & after[restype[j]])
    d = torch.cdist(pos[f, i], pos[f, j])  # [P, 14, 14]
    hit = ((d < cut) & exists[i][:, :, None] & exists[j][:, None, :] & ~skip).flatten(1)
    hit = hit.any(-1) if pairs.valid is None else hit.any(-1) & pairs.valid
    return out.index_add_(0, f, hit.to(torch.int32)) > 0


@dataclass(frozen=True)
class ContactRow:
    """One output row that keeps a close pair: its frame and sample, how many pairs, the closest one named."""

    frame: int
    sample: int
    pairs: int
    closest: str  # "A:LYS12 NZ – A:GLU40 OE1 1.05 Å"


def close_pair_text(rows: int, cutoff: float, fate: str, first: str, files: int | None = None) -> str:
    """The words of every close-contact warning: ``rows`` (of ``files`` files) keep a pair, what became of them
    (``fate``), the first one."""
    of = "" if files is None else f" of {files} file(s)"
    return (f"{rows} row(s){of} keep a heavy-atom pair closer than {cutoff} Å that the model's repair did not "
            f"remove ({fate}), first: {first}")


@dataclass
class CloseContactReport:
    """What a run (or a call) records of its close contacts: every row counted, the first NAMED named by frame."""

    cutoff_A: float = CUTOFF
    rows: int = 0
    named: list[ContactRow] = field(default_factory=list)

    @classmethod
    def merge(cls, reports: list[CloseContactReport]) -> CloseContactReport:
        """The reports of several ranks as one (named rows sorted by frame, then sample)."""
        named = sorted((x for r in reports for x in r.named), key=lambda x: (x.frame, x.sample))
        return cls(CUTOFF, sum(r.rows for r in reports), named[:NAMED])

    def first(self) -> str:
        row = self.named[0]
        return f"frame {row.frame} sample {row.sample} ({row.closest})"

    def api_message(self) -> str:
        """The Python API's warning (ldb_hpc.api.CloseContactWarning)."""
        return close_pair_text(self.rows, self.cutoff_A, "returned all the same", self.first())

    def warning(self, summary_path: str) -> str | None:
        """The CLI's one stderr line for a trajectory run when some rows keep a close pair, else None."""
        if not self.rows:
            return None
        text = close_pair_text(self.rows, self.cutoff_A,
                               "written all the same; the CA trace may be too tight there", self.first())
        return f"warning: {text}; listed in {summary_path}"

    def to_json(self) -> dict:
        return {"cutoff_A": self.cutoff_A, "rows": self.rows, "named": [asdict(x) for x in self.named]}

    @classmethod
    def from_json(cls, data: dict) -> CloseContactReport:
        return cls(float(data["cutoff_A"]), int(data["rows"]), [ContactRow(**x) for x in data["named"]])


class CloseContacts:
    """Log of the rows that keep a pair closer than ``cutoff`` Å: ``rows`` counted, the first NAMED in ``named``."""

    def __init__(self, residues: Residues, cutoff: float = CUTOFF):
        self.residues = residues
        self.cutoff = cutoff
        self.topo = metrics.build_topology(residues.restype, residues.segment, rc.SLOT_MASK[residues.restype],
                                           disulfides=residues.disulfides)
        self.rows = 0
        self.named: list[ContactRow] = []

    def _atom(self, flat: int) -> str:
        r, slot = divmod(int(flat), rc.NUM_SLOTS)
        res = self.residues
        name = rc.ATOM14[rc.RESTYPES_3[res.restype[r]]][slot]
        return f"{res.chain_id[r]}:{res.resname[r]}{res.resseq[r]}{res.icode[r]} {name}"

    def check(self, frame_start: int, positions: np.ndarray, rows: np.ndarray | None = None) -> int:
        """Check frames ``frame_start ..`` positions [n, S, L, 14, 3] Å; returns how many rows keep a close pair.
        rows: only these flat rows (frame·S + sample) can hold one (:func:`close_rows` said so on the device);
        None: all."""
        n, S = positions.shape[:2]
        flat = positions.reshape(n * S, *positions.shape[2:])
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size == 0:
                return 0
            flat = flat[rows]
        with resident.host_side():  # rows already read back: the CPU's work, also on a GPU run
            row, a, b, d = metrics.clashing_pairs(flat, self.topo, self.cutoff)
        if row.size == 0:
            return 0
        if rows is not None:
            row = rows[row]
        rows = np.unique(row)
        self.rows += int(rows.size)
        for r in rows[: max(0, NAMED - len(self.named))]:
            sel = np.nonzero(row == r)[0]
            k = sel[np.argmin(d[sel])]
            self.named.append(ContactRow(frame_start + int(r) // S, int(r) % S, int(sel.size),
                                         f"{self._atom(a[k])} – {self._atom(b[k])} {float(d[k]):.2f} Å"))
        return int(rows.size)

    def report(self) -> CloseContactReport:
        return CloseContactReport(self.cutoff, self.rows, list(self.named))
