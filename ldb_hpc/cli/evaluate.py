"""``ldb-hpc evaluate``: structural metrics of a backmapped trajectory against a reference (DESIGN.md metrics)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc evaluate md.aa.h5 --ref md.pdb                        # every row against one structure
  ldb-hpc evaluate md.aa.h5 --ref md.xtc --ref-top md.pdb --json metrics.json
  ldb-hpc evaluate ens.aa.h5 --ref ens.pdb --samples 10         # 10 samples per reference frame + diversity
  ldb-hpc evaluate model.pdb --ref native.pdb --map-residue MSE=MET

Rows of PRED are frame-major: with F reference frames and S samples per frame, row r is compared with
reference frame r // S; a single reference frame is compared with every row. Atoms are matched by residue
position (chain order) and normalised atom name; hydrogens and OXT are ignored.
"""

# Table rows: metric key, label, scale, unit shown.
_TABLE = (
    ("rmsd", "RMSD heavy atoms", 1.0, "Å"),
    ("rmsd_backbone", "RMSD backbone (N, CA, C, O)", 1.0, "Å"),
    ("bond_outliers", "bond length outliers (> 0.1 Å)", 100.0, "%"),
    ("clash_1.2", "clashes < 1.2 Å", 1.0, "per 1000 atoms"),
    ("clash_2.0", "clashes < 2.0 Å", 1.0, "per 1000 atoms"),
    ("chi1_accuracy", "χ1 within 40°", 100.0, "%"),
    ("chi12_accuracy", "χ1 and χ2 within 40°", 100.0, "%"),
    ("graph_valid", "valid bond graph", 100.0, "% of rows"),
    ("rmsd_gen", "mean pairwise RMSD between samples", 1.0, "Å"),
    ("rmsd_ref", "mean RMSD of samples to reference", 1.0, "Å"),
    ("div", "DIV = 1 - RMSD_gen / RMSD_ref", 1.0, ""),
)


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="RMSD, bond outliers, clashes, χ accuracy, graph validity, diversity",
                       description="Compare a backmapped all-atom trajectory (PRED) with a reference structure or "
                                   "trajectory (REF): heavy-atom and backbone RMSD without superposition, bond-length "
                                   "outliers, clashes, χ1/χ2 accuracy, bond-graph validity and, with several samples "
                                   "per frame, diversity. Prints a table; --json writes per-frame values.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", metavar="PRED",
                   help="backmapped trajectory: ldb-hpc all-atom HDF5 or any mdtraj-readable file")
    p.add_argument("--ref", required=True,
                   help="reference structure or trajectory (PDB, mmCIF, h5, xtc with --ref-top)")
    p.add_argument("--top", help="topology of PRED when its format has none (xtc, dcd, ...)")
    p.add_argument("--ref-top", help="topology of REF when its format has none (xtc, dcd, ...)")
    p.add_argument("--samples", type=int, metavar="S",
                   help="samples per reference frame in PRED (default: from an ldb-hpc file's /ldb/sample, else "
                        "rows / reference frames)")
    p.add_argument("--json", metavar="FILE", help="write the summary and the per-row / per-frame values as JSON")
    p.add_argument("--keep-unknown", action="store_true",
                   help="keep non-standard amino acids as UNK (backbone only) instead of stopping with an error")
    common.add_residue_map_option(p)
    common.add_overwrite_option(p)
    p.set_defaults(run=run)


def _samples_in_file(path: str) -> int | None:
    """S from an ldb-hpc output's /ldb/sample dataset, None for other files."""
    try:
        import h5py

        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            if "ldb/sample" in f and f["ldb/sample"].shape[0] > 0:
                return int(f["ldb/sample"][()].max()) + 1
    except (OSError, ValueError):
        return None
    return None


def resolve_samples(n_rows: int, n_ref: int, samples: int | None, from_file: int | None = None) -> int:
    """Samples per frame S for ``n_rows`` PRED rows and ``n_ref`` REF frames; InputError when they do not fit."""
    from ldb_hpc.errors import InputError

    if samples is not None and samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    S = samples or from_file
    if S is None:
        if n_ref == 1:
            S = 1
        elif n_rows % n_ref == 0:
            S = n_rows // n_ref
        else:
            raise InputError(f"PRED has {n_rows} rows, REF has {n_ref} frames: not a whole number of samples per "
                             "frame (pass --samples S, or a single-frame REF)")
    if n_rows % S:
        raise InputError(f"PRED has {n_rows} rows, not a multiple of {S} samples per frame")
    if n_ref not in (1, n_rows // S):
        raise InputError(f"PRED has {n_rows // S} frames × {S} samples but REF has {n_ref} frames "
                         f"(need {n_rows // S} or 1)")
    return S


def check_same_residues(pred_res, ref_res) -> None:
    """InputError unless both have the same number of residues and the same residue types in chain order."""
    from ldb_hpc.chem.residues import RESTYPES_3
    from ldb_hpc.errors import InputError
    from ldb_hpc.io.topology import residue_labels

    if len(pred_res) != len(ref_res):
        raise InputError(f"PRED has {len(pred_res)} residues but REF has {len(ref_res)}; "
                         "they must be the same protein (residues matched by position in chain order)")
    diff = (pred_res.restype != ref_res.restype).nonzero()[0]
    if diff.size:
        i = int(diff[0])
        pl = residue_labels(pred_res.chain_id[i:i + 1], pred_res.resseq[i:i + 1])[0]
        rl = residue_labels(ref_res.chain_id[i:i + 1], ref_res.resseq[i:i + 1])[0]
        raise InputError(f"sequence mismatch at residue {i + 1} of {len(pred_res)}: PRED {pl} "
                         f"{RESTYPES_3[pred_res.restype[i]]} vs REF {rl} {RESTYPES_3[ref_res.restype[i]]} "
                         f"({diff.size} mismatches; use --map-residue for renamed residues)")


def ideal_bond_table(ref_pos, ref_mask, pred_pos, pred_mask, residues):
    """Ideal bond lengths: the shipped table (ldb_hpc.chem.ideal_geometry) or, when it is absent, medians measured
    on REF (PRED medians for bonds REF never shows). Returns (ideal_bond [21, max_bonds] Å, ideal_peptide Å, source)."""
    import numpy as np

    try:
        from ldb_hpc.chem.ideal_geometry import ideal_geometry

        g = ideal_geometry()
        return np.asarray(g.bond_length), float(g.peptide_bond), "ldb_hpc.chem.ideal (measured on train)"
    except (ImportError, OSError, KeyError, ValueError):
        pass
    from ldb_hpc.geometry.metrics import ideal_bonds_from

    bond, pep = ideal_bonds_from(ref_pos, ref_mask, residues.restype, residues.segment)
    bond2, pep2 = ideal_bonds_from(pred_pos[:1], pred_mask, residues.restype, residues.segment)
    bond = np.where(np.isnan(bond), bond2, bond)
    pep = pep2 if math.isnan(pep) else pep
    return bond, pep, "medians of REF (shipped ideal table not found)"


def topology_disulfides(traj, residue_map, keep_unknown: bool, source: str) -> list[tuple[int, int]]:
    """The SG–SG bonds of PRED's own topology (MDTraj-HDF5 bonds, PDB CONECT) as residue index pairs of its
    protein residues: the only SG–SG pairs the clash rule takes as bonded."""
    from ldb_hpc.io import mdtraj_bridge as mb

    sel = mb.select_protein(traj.topology, residue_map, keep_unknown, source)
    ours = {int(r): k for k, r in enumerate(sel.residue_index)}
    pairs = set()
    for a, b in traj.topology.bonds:
        if a.name == b.name == "SG" and a.residue.index in ours and b.residue.index in ours:
            i, j = ours[a.residue.index], ours[b.residue.index]
            if i != j:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def _clean(v):
    v = float(v)
    return None if math.isnan(v) else v


def run(args) -> int:
    import numpy as np

    from ldb_hpc.errors import InputError
    from ldb_hpc.geometry.metrics import UNITS, aggregate, chi_by_residue_type, evaluate_frames
    from ldb_hpc.io import mdtraj_bridge as mb

    common.existing_file(args.pred, "PRED")
    common.existing_file(args.ref, "REF")
    if args.json:
        common.check_output(args.json, args.overwrite)
    residue_map = common.parse_residue_map(args.map_residue)

    pred_traj = mb.load_any(args.pred, args.top)
    pred_res, pred, pred_mask = mb.traj_to_atom14(pred_traj, residue_map, args.keep_unknown, source=args.pred)
    pred_res = pred_res.with_disulfides(topology_disulfides(pred_traj, residue_map, args.keep_unknown, args.pred))
    ref_res, ref, ref_mask = mb.traj_to_atom14(mb.load_any(args.ref, args.ref_top), residue_map,
                                               args.keep_unknown, source=args.ref)
    check_same_residues(pred_res, ref_res)
    S = resolve_samples(pred.shape[0], ref.shape[0], args.samples, _samples_in_file(args.pred))
    if not (pred_mask & ref_mask).any():
        raise InputError("PRED and REF have no atom in common")
    ideal_bond, ideal_peptide, ideal_source = ideal_bond_table(ref, ref_mask, pred, pred_mask, pred_res)

    per = evaluate_frames(pred, ref, pred_res.restype, pred_res.segment, pred_mask, ref_mask, samples=S,
                          ideal_bond=ideal_bond, ideal_peptide=ideal_peptide, disulfides=pred_res.disulfides)
    summary = aggregate(per)
    ref_rows = ref[np.arange(pred.shape[0]) // S] if ref.shape[0] > 1 else ref
    by_type = chi_by_residue_type(pred, ref_rows, pred_mask, ref_mask, pred_res.restype)

    n_rows, n_frames = pred.shape[0], pred.shape[0] // S
    print(f"PRED {args.pred}: {n_rows} row(s) = {n_frames} frame(s) × {S} sample(s), {len(pred_res)} residues, "
          f"{int(pred_mask.sum())} heavy atoms; REF {args.ref}: {ref.shape[0]} frame(s), "
          f"{int((pred_mask & ref_mask).sum())} atoms in common")
    width = max(len(label) for _, label, _, _ in _TABLE)
    print(f"{'metric':<{width}}  {'value':>10}  unit")
    for key, label, scale, unit in _TABLE:
        if key in summary:
            v = summary[key]
            text = "n/a" if math.isnan(v) else f"{v * scale:.3f}"
            print(f"{label:<{width}}  {text:>10}  {unit}")
    print(f"ideal bond lengths: {ideal_source}")

    if args.json:
        frame_keys = ("rmsd_gen", "rmsd_ref", "div")
        doc = {
            "pred": os.path.abspath(args.pred), "ref": os.path.abspath(args.ref),
            "rows": n_rows, "frames": n_frames, "samples": S, "residues": len(pred_res),
            "ideal_bonds": ideal_source,
            "units": {k: UNITS.get(k, "count") for k in per},
            "summary": {k: _clean(v) for k, v in summary.items()},
            "by_residue_type": by_type,
            "per_row": {k: [_clean(x) for x in np.asarray(v).tolist()] for k, v in per.items() if k not in frame_keys},
            "per_frame": {k: [_clean(x) for x in np.asarray(v).tolist()] for k, v in per.items() if k in frame_keys},
        }
        tmp = common.temp_path_for(args.json)
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1, ensure_ascii=False)
            os.replace(tmp, args.json)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"per-frame metrics -> {args.json}", file=sys.stderr)
    return 0
