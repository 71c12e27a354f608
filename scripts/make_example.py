"""Make the bundled example CG trajectory (examples/example.cg.h5) from a PDB shipped in a PyPI package.

The CA trace of the structure is moved by overdamped Langevin (Brownian) dynamics on an elastic network
(harmonic springs between CAs closer than a cutoff; stiffer springs between sequence neighbours so that
CA–CA stays ≈ 3.8 Å), with a fixed seed: the elastic network alone (``ldb_hpc.synth.brownian_frames``), which
``ldb-hpc synth`` used before issue 22 (it now adds angle, dihedral and excluded-volume terms, docs/SYNTH.md).
Frames are written every ``--steps`` steps. See examples/README.md for the exact command and the source
of the default structure.

Default source: 1BHL.pdb (HIV-1 integrase catalytic domain, PDB entry 1BHL) from the pdbfixer 1.12.0
sdist on PyPI (pdbfixer/tests/data/1BHL.pdb, MIT licence; PDB data CC0):

    pip download --no-deps --no-binary :all: pdbfixer==1.12.0 -d /tmp/pdbfixer
    tar xzf /tmp/pdbfixer/pdbfixer-1.12.0.tar.gz -C /tmp/pdbfixer
    python scripts/make_example.py /tmp/pdbfixer/pdbfixer-1.12.0/pdbfixer/tests/data/1BHL.pdb --overwrite
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ldb_hpc.errors import InputError  # noqa: E402
from ldb_hpc.synth import brownian_frames, elastic_network  # noqa: E402

DEFAULT_PDB = "/tmp/pdbfixer/pdbfixer-1.12.0/pdbfixer/tests/data/1BHL.pdb"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pdb", nargs="?", default=DEFAULT_PDB, help=f"source structure (default {DEFAULT_PDB})")
    p.add_argument("-o", "--output", default=os.path.join(REPO, "examples", "example.cg.h5"))
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--steps", type=int, default=200, help="Brownian steps between frames")
    p.add_argument("--dt-ps", type=float, default=10.0, help="time between frames written to /time (ps)")
    p.add_argument("--cutoff", type=float, default=10.0, help="elastic-network cutoff (Å)")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--map-residue", action="append", default=None, metavar="OLD=NEW",
                   help="residue renames (default CAS=CYS: 1BHL has two cacodylated cysteines)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    from ldb_hpc.io import mdtraj_bridge as mb
    from ldb_hpc.io.cg import NM, CGWriter

    residue_map = {}
    for item in args.map_residue if args.map_residue is not None else ["CAS=CYS"]:
        old, _, new = item.partition("=")
        residue_map[old.strip().upper()] = new.strip().upper()
    try:
        traj = mb.load_any(args.pdb)
        sel = mb.select_protein(traj.topology, residue_map, source=args.pdb)
        if (sel.ca_atom < 0).any():
            raise InputError(f"{args.pdb}: some residues have no CA atom")
        ca0 = traj.xyz[0, sel.ca_atom].astype(np.float64) * NM
        residues = sel.residues(ca0)
        pairs, rest, k = elastic_network(ca0, residues, args.cutoff, k_contact=1.0, k_bonded=100.0)
        ca = brownian_frames(ca0, pairs, rest, k, args.frames, args.steps, dt_d=0.002, seed=args.seed)
        with CGWriter(args.output, residues, overwrite=args.overwrite, expected_frames=args.frames,
                      title=f"elastic-network Brownian dynamics of the CA trace of {os.path.basename(args.pdb)}") as w:
            w.append(ca, np.arange(args.frames) * args.dt_ps)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    link = residues.peptide_links()
    cc = np.linalg.norm(ca[:, 1:] - ca[:, :-1], axis=-1)[:, link]
    rmsd = np.sqrt(((ca - ca0[None]) ** 2).sum(-1).mean(-1))
    print(f"wrote {args.output}: {args.frames} frames, {len(residues)} residues, "
          f"{int(residues.segment.max()) + 1} segment(s), {len(pairs)} springs; "
          f"CA-CA {cc.mean():.2f} ± {cc.std():.2f} Å (min {cc.min():.2f}, max {cc.max():.2f}); "
          f"RMSD to the crystal {rmsd.min():.2f}..{rmsd.max():.2f} Å; {os.path.getsize(args.output)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
