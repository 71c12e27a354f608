"""The clash guarantee of a run: every output row is checked for non-bonded heavy-atom pairs closer than 1.2 Å
(DESIGN.md's clash definition: neither 1-2 nor 1-3, a bonded Cys SG–SG exempt) after the model's repair.

The model's repair removes them wherever moving side chains or peptide units can; what it cannot reach (e.g. two
CA atoms of the input closer than that, or two chains pressed into each other) is still written, never dropped,
but counted and named: each rank keeps a :class:`CloseContacts` log, :func:`merge` joins them into the run
summary, and :func:`warning` is the one line the CLI prints on stderr.
"""

from __future__ import annotations

from ldb_hpc.geometry.contacts import CUTOFF, NAMED, CloseContacts

__all__ = ["CUTOFF", "NAMED", "CloseContacts", "merge", "warning"]


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
