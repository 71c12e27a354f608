"""One structure file parsed for the training set of ``ldb-hpc prepare`` (first model, atom14 arrays).

:func:`parse_for_training` turns a file into a :class:`ParsedFile` (or the reason it is skipped);
:func:`iter_parsed` does so for many files in worker processes, in input order. The training set's format
(what is stored, the writer and the reader) is :mod:`ldb_hpc.io.training_set`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldb_hpc.errors import InputError
from ldb_hpc.io.structure import ParseReport, read_structure_with_report


@dataclass
class ParsedFile:
    """Arrays of one parsed file (first model), or the reason it was skipped."""

    path: str
    ok: bool
    reason: str = ""
    report: ParseReport | None = None
    positions: np.ndarray | None = None  # [L, 14, 3] float32 Å
    mask: np.ndarray | None = None  # [L, 14] bool
    restype: np.ndarray | None = None  # [L] int8
    resname: np.ndarray | None = None  # [L] S5
    resseq: np.ndarray | None = None  # [L] int32
    icode: np.ndarray | None = None  # [L] S1
    chain_id: np.ndarray | None = None  # [L] object str
    segment: np.ndarray | None = None  # [L] int64, 0-based within the file


def parse_for_training(path: str, residue_map: dict[str, str] | None = None,
                       keep_unknown: bool = True, strict: bool = False) -> ParsedFile:
    """Parse the first model of one structure file for the training set.

    Unparsable files give ``ParsedFile(ok=False, reason=...)`` unless ``strict`` (then the
    InputError propagates). Unknown amino-acid-like residues are kept as UNK when ``keep_unknown``.
    """
    try:
        proteins, report = read_structure_with_report(path, models="first", residue_map=residue_map,
                                                      keep_unknown=keep_unknown)
    except InputError as exc:
        if strict:
            raise
        return ParsedFile(path, False, reason=" ".join(str(exc).split()))
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop a run over thousands
        if strict:
            raise InputError(f"cannot parse {path}: {type(exc).__name__}: {exc}") from None
        return ParsedFile(path, False, reason=f"cannot parse {path}: {type(exc).__name__}: "
                                              f"{' '.join(str(exc).split())}")
    p = proteins[0]
    res = p.residues
    long_names = sorted({n for n in res.resname if len(n) > 5})
    if long_names:  # CCD codes have at most 5 characters; never truncate silently
        return ParsedFile(path, False, reason=f"residue names longer than 5 characters in {path}: "
                                              f"{', '.join(long_names)}")
    return ParsedFile(
        path, True, report=report,
        positions=p.positions.astype(np.float32),
        mask=p.mask,
        restype=res.restype.astype(np.int8),
        resname=res.resname.astype("S5"),
        resseq=res.resseq.astype(np.int32),
        icode=np.asarray([c[:1] for c in res.icode]).astype("S1"),
        chain_id=res.chain_id,
        segment=res.segment,
    )


def _parse_star(args):
    return parse_for_training(*args)


def iter_parsed(paths: list[str], residue_map: dict[str, str] | None, workers: int = 1,
                strict: bool = False):
    """Yield ParsedFile for each path, in input order, parsing in ``workers`` processes."""
    jobs = [(p, residue_map, not strict, strict) for p in paths]
    if workers <= 1 or len(paths) < 2:
        for job in jobs:
            yield _parse_star(job)
        return
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        # imap keeps the input order, so the output file does not depend on the worker count.
        yield from pool.imap(_parse_star, jobs, chunksize=4)


__all__ = ["ParsedFile", "iter_parsed", "parse_for_training"]
