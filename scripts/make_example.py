"""Make the bundled example CG trajectory (examples/example.cg.h5) from a PDB shipped in a PyPI package.

The CA trace of the structure is moved by overdamped Langevin (Brownian) dynamics on an elastic network
(harmonic springs between CAs closer than a cutoff; stiffer springs between sequence neighbours so that
CA–CA stays ≈ 3.8 Å), with a fixed seed. Frames are written every ``--steps`` steps. See
examples/README.md for the exact command and the source of the default structure.

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

from ldb_hpc.chem.protein import Residues  # noqa: E402
from ldb_hpc.errors import InputError  # noqa: E402

KT = 0.596  # kcal/mol at 300 K
DEFAULT_PDB = "/tmp/pdbfixer/pdbfixer-1.12.0/pdbfixer/tests/data/1BHL.pdb"


def elastic_network(ca0: np.ndarray, residues: Residues, cutoff: float, k_contact: float, k_bonded: float):
    """Springs of the network: (pairs [P, 2] int64, rest lengths [P] Å, force constants [P] kcal/mol/Å²)."""
    d = np.linalg.norm(ca0[:, None] - ca0[None], axis=-1)
    i, j = np.nonzero(np.triu(d < cutoff, k=1))
    # Sequence neighbours of a segment get the stiff "virtual bond" spring.
    bonded = (j == i + 1) & (residues.segment[i] == residues.segment[np.minimum(j, len(residues) - 1)])
    k = np.where(bonded, k_bonded, k_contact)
    return np.stack([i, j], axis=-1), d[i, j], k


def brownian_frames(ca0: np.ndarray, pairs, rest, k, frames: int, steps: int, dt_d: float, seed: int):
    """Overdamped Langevin on the network. ca0: [L, 3] Å; dt_d: D·dt in Å² per step.

    Returns [frames, L, 3] float32 Å; frame 0 is after the first ``steps`` steps. The centre is kept fixed.
    """
    rng = np.random.default_rng(seed)
    x = ca0.astype(np.float64).copy()
    centre = x.mean(axis=0)
    out = np.empty((frames, len(x), 3), dtype=np.float32)
    i, j = pairs[:, 0], pairs[:, 1]
    for f in range(frames):
        for _ in range(steps):
            v = x[j] - x[i]
            d = np.linalg.norm(v, axis=-1, keepdims=True)
            fij = (k * (d[:, 0] - rest))[:, None] * v / np.maximum(d, 1e-6)  # pulls i toward j when stretched
            force = np.zeros_like(x)
            np.add.at(force, i, fij)
            np.add.at(force, j, -fij)
            x += dt_d / KT * force + np.sqrt(2.0 * dt_d) * rng.standard_normal(x.shape)
        x += centre - x.mean(axis=0)
        out[f] = x
    return out


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
    from ldb_hpc.io.cg import CGWriter, NM

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
