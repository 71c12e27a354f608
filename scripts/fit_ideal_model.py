#!/usr/bin/env python
"""Fit the tables of ``--model ideal`` on the training set → ldb_hpc/weights/ideal.npz.

Usage (after `ldb-hpc prepare ../shared/data/train -o /tmp/train.h5 --manifest ../shared/data/MANIFEST.tsv`
and scripts/measure_geometry.py):

    python scripts/fit_ideal_model.py /tmp/train.h5 [-o ldb_hpc/weights/ideal.npz]

The tables are statistics (mean backbone positions per CA-trace bin, rotamer modes), nothing learned by
gradient descent; see ldb_hpc/model/ideal.py.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.builder import measure_torsions
from ldb_hpc.io.training_set import read_training_set
from ldb_hpc.model.ideal import TABLE_FILE, fit_tables


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_h5")
    ap.add_argument("-o", "--output", default=str(TABLE_FILE))
    args = ap.parse_args(argv)
    data = read_training_set(args.train_h5)
    pos = data.positions.astype(np.float64)
    mask, restype, segment = data.mask, data.restype, data.segment
    present = mask[:, :4].all(-1)
    chi, chi_mask = [], []
    for s in range(0, len(pos), 65536):
        t, tm = measure_torsions(torch.from_numpy(pos[s:s + 65536]), torch.from_numpy(restype[s:s + 65536]),
                                 torch.from_numpy(mask[s:s + 65536]))
        chi.append(t[:, 1:].numpy())
        chi_mask.append(tm[:, 1:].numpy().astype(bool))
    chi, chi_mask = np.concatenate(chi), np.concatenate(chi_mask)
    tables = fit_tables(pos[:, 0], pos[:, 1], pos[:, 2], pos[:, 3], present, segment, restype, chi, chi_mask)
    counts = tables["counts_full"]
    print(f"{len(pos)} residues; full α bins with ≥8 samples: {(counts >= 8).sum()} of {counts.size}",
          file=sys.stderr)
    for r, name in enumerate(rc.RESTYPES_3[:-1]):
        n_chi = int(rc.CHI_MASK[r].sum())
        if n_chi:
            modes = np.rad2deg(tables["rotamer"][r, 3, :n_chi]).round(0)
            print(f"  {name} rotamer mode (any backbone): {modes.tolist()}", file=sys.stderr)
    np.savez_compressed(args.output, **{k: v.astype(np.float32) for k, v in tables.items()})
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
