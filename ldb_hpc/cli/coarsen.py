"""``ldb-hpc coarsen``: all-atom trajectory or structure → CG MDTraj-HDF5, one bead per residue: its CA (``--cg ca``)
or the mass-weighted centre of its heavy atoms (``--cg com``, ldb_hpc.chem.cg_mappings; named CA, as CALVADOS
names its beads)."""

from __future__ import annotations

import argparse
import os

from ldb_hpc.cli import common

EPILOG = """examples:
  ldb-hpc coarsen md.xtc --top system.pdb -o md.cg.h5     # stream an MD trajectory
  ldb-hpc coarsen nmr_ensemble.pdb -o ens.cg.h5           # every MODEL becomes a frame
  ldb-hpc coarsen 1abc.cif --map-residue CAS=CYS --overwrite
  ldb-hpc coarsen 1abc.pdb --cg com -o 1abc.com.h5         # residue centres of mass (backmap --cg com)
"""


def add_parser(sub) -> None:
    p = sub.add_parser("coarsen", help="make a CA-only CG trajectory from an all-atom trajectory or PDB/mmCIF",
                       description="Keep one CA bead per amino-acid residue (water, ions and ligands are "
                                   "skipped and counted) and write an MDTraj-HDF5 CG trajectory with chains, "
                                   "residue names and numbers, time and unit cell of the input.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="any mdtraj-readable trajectory (xtc, dcd, trr, h5, ...) or a PDB/mmCIF file")
    p.add_argument("--top", help="topology for inputs that carry none (xtc, dcd, ...), e.g. a PDB of the system")
    p.add_argument("-o", "--output", help="output CG file (default: INPUT with its extension replaced by .cg.h5)")
    p.add_argument("--chunk", type=int, default=1000, metavar="N", help="frames read per chunk (default 1000)")
    p.add_argument("--cg", default="ca", choices=("ca", "com", "martini3"),
                   help="the beads of each residue: ca (its C-alpha, the default), com (the mass-weighted centre "
                        "of its heavy atoms present) or martini3 (BB and SC1..SC5 as martinize2 places them from "
                        "vermouth's martini3001 mapping files; written by the extension of -o: .gro, .pdb, .h5, "
                        "or .xtc/.dcd/.trr with OUT.gro beside it)")
    p.add_argument("--keep-unknown", action="store_true",
                   help="keep non-standard amino acids as UNK instead of stopping with an error")
    common.add_overwrite_option(p)
    common.add_residue_map_option(p)
    p.set_defaults(run=run)


def default_output(path: str) -> str:
    from ldb_hpc.io.mdtraj_bridge import extension

    base = path[: len(path) - len(extension(path))] if extension(path) else path
    return base + ".cg.h5"


def run(args) -> int:
    from ldb_hpc.errors import InputError

    common.existing_file(args.input, "input")
    if args.top:
        common.existing_file(args.top, "topology")
    if args.chunk < 1:
        raise InputError(f"--chunk must be at least 1, got {args.chunk}")
    output = args.output or default_output(args.input)
    if os.path.abspath(output) == os.path.abspath(args.input):
        raise InputError(f"output would overwrite the input: {output}")
    common.check_output(output, args.overwrite)
    residue_map = common.parse_residue_map(args.map_residue)

    if args.cg == "martini3":
        from ldb_hpc.io.martini import write_martini

        n_frames, residues, summary = write_martini(args.input, output, top=args.top, residue_map=residue_map,
                                                    keep_unknown=args.keep_unknown, overwrite=args.overwrite)
    else:
        n_frames, residues, summary = coarsen(args.input, output, top=args.top, residue_map=residue_map,
                                              keep_unknown=args.keep_unknown, overwrite=args.overwrite,
                                              chunk=args.chunk, cg=args.cg)
    n_chains = len(set(residues.chain_id.tolist()))
    n_seg = int(residues.segment.max()) + 1
    print(f"coarsened {n_frames} frame(s), {len(residues)} residues ({n_chains} chain(s), {n_seg} segment(s)) "
          f"-> {output}")
    if summary:
        print(f"note: {summary}")
    return 0


def coarsen(path: str, output: str, top: str | None = None, residue_map: dict[str, str] | None = None,
            keep_unknown: bool = False, overwrite: bool = False, chunk: int = 1000, cg: str = "ca"):
    """Write the CG trajectory of ``path`` to ``output`` (temp file + rename), streaming ``chunk`` frames; one
    bead per residue of mapping ``cg`` (ca or com).

    Returns (n_frames, residues, note about skipped non-protein residues or "").
    """
    from ldb_hpc.errors import InputError
    from ldb_hpc.io import mdtraj_bridge as mb
    from ldb_hpc.io.cg import CGWriter, check_coordinates
    from ldb_hpc.io.mdtraj_hdf5 import NM

    topology = mb.load_topology(path, top)
    sel = mb.select_protein(topology, residue_map, keep_unknown, path)
    missing = (sel.ca_atom < 0).nonzero()[0]
    if missing.size:
        raise InputError(f"{path}: residue {sel.resname[missing[0]]} {sel.labels()[missing[0]]} has no CA atom "
                         f"({missing.size} such residues); a CG bead needs the CA position")
    import numpy as np

    expected = mb.count_frames(path)
    atoms = sel.ca_atom if cg == "ca" else sel.atom_index
    chunks = mb.iterload_any(path, top, chunk=chunk, atom_indices=atoms)
    first = next(chunks, None)
    if first is None or first.n_frames == 0:
        raise InputError(f"{path}: the trajectory has zero frames")
    if first.n_atoms != len(atoms):
        raise InputError(f"{path}: the trajectory has fewer atoms than the topology ({first.n_atoms} atoms "
                         f"read, {len(atoms)} expected); wrong --top?")
    beads = _beads_of(sel, cg)
    residues = sel.residues(first.xyz[0, np.searchsorted(atoms, sel.ca_atom)] * NM if cg != "ca"
                            else first.xyz[0] * NM)
    has_cell = first.unitcell_lengths is not None

    n = 0
    with CGWriter(output, residues, has_cell=has_cell, overwrite=overwrite,
                  title=f"CG of {os.path.basename(path)}",
                  expected_frames=expected or first.n_frames) as writer:
        for traj in _chain_first(first, chunks):
            ca = beads(traj.xyz.astype(np.float32) * np.float32(NM))
            check_coordinates(ca, n, path)
            cl = ang = None
            if has_cell:
                if traj.unitcell_lengths is None:
                    raise InputError(f"{path}: frames from {n} on have no unit cell while earlier ones do")
                cl = traj.unitcell_lengths * np.float32(NM)
                ang = np.deg2rad(traj.unitcell_angles.astype(np.float64))
            writer.append(ca, traj.time, cl, ang)
            n += traj.n_frames
        if expected is not None and n != expected:
            raise InputError(f"{path}: read {n} frames but the file declares {expected} (truncated?)")
    return n, residues, sel.skipped_summary()


def _beads_of(sel, cg: str):
    """xyz [n, atoms read, 3] Å → beads [n, L, 3] Å of mapping ``cg`` (the atoms read: the CAs for ca, every
    protein heavy atom of ``sel`` in its order for another mapping)."""
    import numpy as np

    from ldb_hpc.chem.cg_mappings import mapping
    from ldb_hpc.chem.residues import NUM_SLOTS

    if cg == "ca":
        return lambda xyz: xyz
    m = mapping(cg)
    L = len(sel)
    mask = np.zeros((L, NUM_SLOTS), dtype=bool)
    mask[sel.atom_residue, sel.atom_slot] = True

    def beads(xyz):
        pos = np.zeros((xyz.shape[0], L, NUM_SLOTS, 3), dtype=np.float32)
        pos[:, sel.atom_residue, sel.atom_slot] = xyz
        return np.ascontiguousarray(m.beads(pos, mask, sel.restype)[0][:, :, 0])

    return beads


def _chain_first(first, rest):
    yield first
    yield from rest
