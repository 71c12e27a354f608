"""Rows that keep a non-bonded heavy-atom pair closer than 1.2 Å (DESIGN.md's clash definition: neither 1-2 nor
1-3, a bonded Cys SG–SG exempt): counted, and the first ones named. The runtime keeps one log per rank
(ldb_hpc.runtime.contacts) and the Python API one per call (ldb_hpc.api)."""

from __future__ import annotations

import numpy as np

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.protein import Residues
from ldb_hpc.geometry import metrics

CUTOFF = 1.2  # Å
NAMED = 20  # rows named in the summary (all are counted)


class CloseContacts:
    """Log of the rows that keep a pair closer than ``cutoff`` Å: ``rows`` counted, the first NAMED in ``named``."""

    def __init__(self, residues: Residues, cutoff: float = CUTOFF):
        self.residues = residues
        self.cutoff = cutoff
        self.topo = metrics.build_topology(residues.restype, residues.segment, rc.SLOT_MASK[residues.restype])
        self.rows = 0
        self.named: list[dict] = []

    def _atom(self, flat: int) -> str:
        r, slot = divmod(int(flat), rc.NUM_SLOTS)
        res = self.residues
        name = rc.ATOM14[rc.RESTYPES_3[res.restype[r]]][slot]
        return f"{res.chain_id[r]}:{res.resname[r]}{res.resseq[r]}{res.icode[r]} {name}"

    def check(self, frame_start: int, positions: np.ndarray) -> int:
        """Check frames ``frame_start ..`` positions [n, S, L, 14, 3] Å; returns how many rows keep a close pair."""
        n, S = positions.shape[:2]
        row, a, b, d = metrics.clashing_pairs(positions.reshape(n * S, *positions.shape[2:]), self.topo, self.cutoff)
        if row.size == 0:
            return 0
        rows = np.unique(row)
        self.rows += int(rows.size)
        for r in rows[: max(0, NAMED - len(self.named))]:
            sel = np.nonzero(row == r)[0]
            k = sel[np.argmin(d[sel])]
            self.named.append({"frame": frame_start + int(r) // S, "sample": int(r) % S, "pairs": int(sel.size),
                               "closest": f"{self._atom(a[k])} – {self._atom(b[k])} {float(d[k]):.2f} Å"})
        return int(rows.size)

    def stats(self) -> dict:
        return {"rows": self.rows, "named": self.named}
