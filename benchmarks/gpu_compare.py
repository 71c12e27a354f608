"""Two backmap outputs of one input, atom by atom: how many atoms agree, and what the others are (gpu_check.py).

A GPU run and a CPU run of the same model agree to float32 rounding where the path is continuous; where it makes a
discrete choice (a rotamer, a code of the tokenizer, a repair move) a near tie can go the other way on the other
device, and the residue's side chain then differs as a whole. :func:`compare_outputs` counts the atoms within a
tolerance and sorts every residue-row that has an atom beyond it into one of:

- ``swap``: chemically equivalent atoms with exchanged names (Asp OD1/OD2, Glu OE1/OE2, Phe/Tyr CD1/CD2 and
  CE1/CE2, Arg NH1/NH2): within the tolerance once the pair is swapped; the structure is the same;
- ``side chain``: the backbone (N, CA, C, O and their hydrogens H, HA) within the tolerance, the side chain not:
  a discrete choice that flipped;
- ``backbone``: a backbone atom beyond it, which no near tie of a side-chain choice explains.
"""

from __future__ import annotations

import collections
import os

import numpy as np

SWAPS = {"ASP": [("OD1", "OD2")], "GLU": [("OE1", "OE2")], "PHE": [("CD1", "CD2"), ("CE1", "CE2")],
         "TYR": [("CD1", "CD2"), ("CE1", "CE2")], "ARG": [("NH1", "NH2")]}
BACKBONE = {"N", "CA", "C", "O", "OXT", "H", "H1", "H2", "H3", "HA", "HA2", "HA3"}


def topology_arrays(path: str | os.PathLike):
    """(residue of each atom [A] int, residue names [R], backbone mask [A] bool, swapped atom order [A] int)."""
    import mdtraj as md

    top = md.load_topology(str(path))
    residue = np.array([a.residue.index for a in top.atoms])
    names = [r.name for r in top.residues]
    backbone = np.array([a.name in BACKBONE for a in top.atoms])
    perm = np.arange(top.n_atoms)
    for res in top.residues:
        index = {a.name: a.index for a in res.atoms}
        for a, b in SWAPS.get(res.name, []):
            if a in index and b in index:
                perm[index[a]], perm[index[b]] = index[b], index[a]
    return residue, names, backbone, perm


def _per_residue(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[rows, atoms] → [rows, residues]: the maximum over each residue's atoms (atoms are grouped by residue)."""
    return np.maximum.reduceat(values, starts, axis=1)


def row_keys(f, rows: int) -> np.ndarray:
    """(cg_frame, sample) of each row; sample 0 when the file has no /ldb/sample."""
    frame = f["ldb/cg_frame"][:] if "ldb/cg_frame" in f else np.full(rows, -1)
    sample = f["ldb/sample"][:] if "ldb/sample" in f else np.zeros_like(frame)
    return np.stack([frame, sample], axis=1) if len(frame) == len(sample) else np.zeros((0, 2), int)


def compare_outputs(ref: str | os.PathLike, dev: str | os.PathLike, frames: int, tol_A: float, share: float,
                    samples: int = 1, block: int = 256, explain: bool = True) -> dict:
    """Compare two outputs of the same ``frames``-frame input with ``samples`` samples each.

    Returns rows_ref, rows_dev, rows_ok (both have frames × samples rows and the same (cg_frame, sample) keys, every
    frame × sample once), cg_frame_ok (an alias kept for the CSV), within (share of the atoms of the common rows
    < ``tol_A`` Å apart; 0 when the atom counts differ), max_diff_A, ``flips`` (Counter of swap / side chain /
    backbone residue-rows), ``flip_residues`` (Counter of the residue names of the side-chain flips), explained
    (no backbone flip) and ok (rows_ok, within ≥ ``share``, explained). Reads ``block`` rows at a time.
    """
    import h5py

    want = frames * samples
    with h5py.File(ref, "r") as fr, h5py.File(dev, "r") as fd:
        xr, xd = fr["coordinates"], fd["coordinates"]
        out = {"rows_ref": int(xr.shape[0]), "rows_dev": int(xd.shape[0])}
        kr, kd = row_keys(fr, xr.shape[0]), row_keys(fd, xd.shape[0])
        expected = {(f, s) for f in range(frames) for s in range(samples)}
        out["rows_ok"] = bool(out["rows_ref"] == out["rows_dev"] == want and len(kr) == len(kd) == want
                              and np.array_equal(kr, kd) and set(map(tuple, kr.tolist())) == expected)
        close, total, worst = 0, 0, 0.0
        flips: collections.Counter = collections.Counter()
        flip_res: collections.Counter = collections.Counter()
        if xr.shape[1:] == xd.shape[1:]:
            residue, names, backbone, perm = topology_arrays(ref) if explain else (None,) * 4
            starts = np.flatnonzero(np.r_[True, residue[1:] != residue[:-1]]) if explain else None
            for start in range(0, min(xr.shape[0], xd.shape[0]), block):
                stop = min(start + block, xr.shape[0], xd.shape[0])
                a, b = xr[start:stop].astype(np.float64), xd[start:stop].astype(np.float64)
                diff = np.linalg.norm(a - b, axis=-1) * 10.0  # nm → Å
                far = diff >= tol_A
                close += int((~far).sum())
                total += diff.size
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
                if explain and far.any():
                    swapped = np.linalg.norm(a[:, perm] - b, axis=-1) * 10.0 >= tol_A
                    bad = _per_residue(far, starts)
                    bad_swapped = _per_residue(swapped, starts)
                    bad_backbone = _per_residue(far & backbone, starts)
                    for row, res in zip(*np.nonzero(bad)):
                        kind = "swap" if not bad_swapped[row, res] else \
                            "backbone" if bad_backbone[row, res] else "side chain"
                        flips[kind] += 1
                        if kind == "side chain":
                            flip_res[names[res]] += 1
        else:
            worst = float("inf")
    out.update(cg_frame_ok=out["rows_ok"], within=close / total if total else 0.0, max_diff_A=worst, flips=flips,
               flip_residues=flip_res, explained=flips["backbone"] == 0)
    out["ok"] = bool(out["rows_ok"] and out["within"] >= share and out["explained"])
    return out


def explain(c: dict) -> str:
    """'3 residue-rows differ: 2 side-chain flips (ASP 1, PHE 1), 1 name swap' (or 'none differ')."""
    flips = c.get("flips") or {}
    n = sum(flips.values())
    if not n:
        return "no residue differs"
    parts = []
    if flips.get("side chain"):
        top = ", ".join(f"{k} {v}" for k, v in c["flip_residues"].most_common(5))
        parts.append(f"{flips['side chain']} side-chain flips ({top})")
    if flips.get("swap"):
        parts.append(f"{flips['swap']} equivalent-atom name swaps")
    if flips.get("backbone"):
        parts.append(f"{flips['backbone']} with the backbone off (unexplained)")
    return f"{n} residue-rows differ: " + ", ".join(parts)
