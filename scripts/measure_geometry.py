#!/usr/bin/env python
"""Measure the ideal internal geometry on the training set → ldb_hpc/chem/ideal_geometry.json.

Usage (after `ldb-hpc prepare ../shared/data/train -o /tmp/train.h5 --manifest ../shared/data/MANIFEST.tsv`):

    python scripts/measure_geometry.py /tmp/train.h5 [-o ldb_hpc/chem/ideal_geometry.json]

Medians for lengths and angles, robust circular means for dihedral offsets; residues are used only
where every atom a value depends on is present. See ldb_hpc/chem/ideal_geometry.py for the layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.ideal_geometry import GEOMETRY_FILE, IdealGeometry
from ldb_hpc.geometry.builder import measure_internal, measure_torsions
from ldb_hpc.io.training_set import read_training_set


def circular_mean(x: np.ndarray, window_deg: float = 30.0) -> float:
    """Robust circular mean (radians): mean direction, then again over values within `window_deg` of it."""
    if x.size == 0:
        return 0.0
    m = np.arctan2(np.sin(x).mean(), np.cos(x).mean())
    d = np.abs(np.angle(np.exp(1j * (x - m))))
    keep = x[d < np.deg2rad(window_deg)]
    if keep.size:
        m = np.arctan2(np.sin(keep).mean(), np.cos(keep).mean())
    return float(m)


def robust_center(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return 0.0, 0.0
    med = float(np.median(x))
    return med, float(1.4826 * np.median(np.abs(x - med)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_h5")
    ap.add_argument("-o", "--output", default=str(GEOMETRY_FILE))
    args = ap.parse_args(argv)

    data = read_training_set(args.train_h5)
    pos = data.positions.astype(np.float32)
    mask, restype, segment = data.mask, data.restype, data.segment
    n_res = len(restype)
    print(f"measuring on {n_res} residues", file=sys.stderr)

    T = torch.from_numpy
    bond = np.zeros((rc.NUM_RESTYPES, rc.NUM_SLOTS))
    angle = np.zeros((rc.NUM_RESTYPES, rc.NUM_SLOTS))
    offset = np.zeros((rc.NUM_RESTYPES, rc.NUM_SLOTS))
    counts = np.zeros((rc.NUM_RESTYPES, rc.NUM_SLOTS), dtype=np.int64)
    frame_local = np.zeros((rc.NUM_RESTYPES, 3, 3))
    bond_length = np.zeros(rc.BOND_SLOTS.shape[:2])
    bond_std = np.zeros(rc.BOND_SLOTS.shape[:2])

    # Internal coordinates in chunks (torch, float64 for the measurement).
    b_all, a_all, d_all, t_all, tm_all = [], [], [], [], []
    for s in range(0, n_res, 65536):
        p = T(pos[s:s + 65536]).double()
        r = T(restype[s:s + 65536])
        b, a, d = measure_internal(p, r)
        t, tm = measure_torsions(p, r, T(mask[s:s + 65536]))
        b_all.append(b.numpy())
        a_all.append(a.numpy())
        d_all.append(d.numpy())
        t_all.append(t.numpy())
        tm_all.append(tm.numpy())
    b_all, a_all, d_all = np.concatenate(b_all), np.concatenate(a_all), np.concatenate(d_all)
    t_all, tm_all = np.concatenate(t_all), np.concatenate(tm_all).astype(bool)

    for r in range(rc.NUM_RESTYPES):
        sel = restype == r
        if r == rc.UNK or not sel.any():
            continue
        m = mask[sel]
        # Frame: N–CA, CA–C lengths and the N–CA–C angle.
        ok = m[:, 0] & m[:, 1] & m[:, 2]
        p = pos[sel][ok].astype(np.float64)
        d_nca = np.linalg.norm(p[:, 0] - p[:, 1], axis=-1)
        d_cac = np.linalg.norm(p[:, 2] - p[:, 1], axis=-1)
        u, v = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1]
        cos_t = (u * v).sum(-1) / (d_nca * d_cac)
        theta = np.median(np.arccos(np.clip(cos_t, -1, 1)))
        l_n, l_c = np.median(d_nca), np.median(d_cac)
        frame_local[r] = [[l_n * np.cos(theta), l_n * np.sin(theta), 0.0], [0.0, 0.0, 0.0], [l_c, 0.0, 0.0]]
        # Z-matrix slots.
        for s in range(rc.NUM_SLOTS):
            if not rc.ZM_MASK[r, s]:
                continue
            ra, rb, rcc = rc.ZM_REFS[r, s]
            ok = m[:, s] & m[:, ra] & m[:, rb] & m[:, rcc]
            ch = rc.ZM_TORSION[r, s]
            if ch >= 0:
                ok &= tm_all[sel][:, ch]
            counts[r, s] = ok.sum()
            bond[r, s] = np.median(b_all[sel][ok, s])
            angle[r, s] = np.median(a_all[sel][ok, s])
            dih = d_all[sel][ok, s]
            if ch == rc.PSI:
                offset[r, s] = 0.0  # the O-torsion channel is this dihedral itself
            elif ch >= 0:
                offset[r, s] = circular_mean(dih - t_all[sel][ok, ch])
            else:
                offset[r, s] = circular_mean(dih)
        for k in range(rc.BOND_SLOTS.shape[1]):
            if not rc.BOND_MASK[r, k]:
                continue
            i, j = rc.BOND_SLOTS[r, k]
            ok = m[:, i] & m[:, j]
            d = np.linalg.norm(pos[sel][ok, i].astype(np.float64) - pos[sel][ok, j], axis=-1)
            bond_length[r, k], bond_std[r, k] = robust_center(d[d < 2.5])

    # UNK: the average backbone of the standard residues (it has N, CA, C, O only).
    std = [r for r in range(rc.NUM_RESTYPES) if r != rc.UNK]
    frame_local[rc.UNK] = frame_local[std].mean(0)
    for s in range(4):
        bond[rc.UNK, s] = bond[std, s].mean()
        angle[rc.UNK, s] = angle[std, s].mean()
    for k in range(3):
        bond_length[rc.UNK, k] = bond_length[std, k].mean()
        bond_std[rc.UNK, k] = bond_std[std, k].mean()

    # Peptide bond C(i)–N(i+1) within segments.
    link = (segment[1:] == segment[:-1]) & mask[:-1, 2] & mask[1:, 0]
    d = np.linalg.norm(pos[:-1, 2][link].astype(np.float64) - pos[1:, 0][link], axis=-1)
    pep, pep_std = robust_center(d[d < 2.5])

    geom = IdealGeometry(frame_local=frame_local, bond=bond, angle=angle, offset=offset,
                         bond_length=bond_length, bond_std=bond_std, peptide_bond=pep, peptide_std=pep_std,
                         source=f"measured by scripts/measure_geometry.py on {Path(args.train_h5).name}: "
                                f"{n_res} residues of ../shared/data/train")
    data = geom.to_json()
    data["counts"] = counts.tolist()
    with open(args.output, "w") as fh:
        json.dump(data, fh, indent=None, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {args.output}; peptide bond {pep:.4f} ± {pep_std:.4f} Å", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
