"""The clash guarantee of a run: every output row is checked for non-bonded heavy-atom pairs closer than 1.2 Å
(DESIGN.md's clash definition: neither 1-2 nor 1-3, a bonded Cys SG–SG exempt) after the model's repair.

The model's repair removes them wherever moving side chains or peptide units can; what it cannot reach (e.g. two
CA atoms of the input closer than that, or two chains pressed into each other) is still written, never dropped,
but counted and named: each rank keeps a :class:`CloseContacts` log, :func:`merge` joins them into the run
summary, and :func:`warning` is the one line the CLI prints on stderr.
"""

from __future__ import annotations

import numpy as np

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.protein import Residues
from ldb_hpc.geometry import metrics

CUTOFF = 1.2  # Å
NAMED = 20  # rows named in the summary (all are counted)


class CloseContacts:
    """Per-rank log of the rows that keep a pair closer than ``cutoff`` Å."""

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


def merge(per_rank: list[dict]) -> dict:
    """The run's record: rows with a pair closer than the cutoff (all ranks), the first NAMED of them by frame."""
    named = sorted((x for s in per_rank for x in s["named"]), key=lambda x: (x["frame"], x["sample"]))
    return {"cutoff_A": CUTOFF, "rows": sum(s["rows"] for s in per_rank), "named": named[:NAMED]}


def warning(record: dict, summary_path: str) -> str | None:
    """One line for stderr when some rows keep a close pair, else None."""
    if not record["rows"]:
        return None
    first = record["named"][0]
    return (f"warning: {record['rows']} row(s) keep a heavy-atom pair closer than {record['cutoff_A']} Å that the "
            f"model's repair did not remove (written all the same; the CA trace may be too tight there), first: "
            f"frame {first['frame']} sample {first['sample']} ({first['closest']}); listed in {summary_path}")
