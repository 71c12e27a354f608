"""Python API for notebooks: backmap an mdtraj CA trajectory in memory."""

from __future__ import annotations


class CloseContactWarning(UserWarning):
    """Some returned rows keep a heavy-atom pair closer than 1.2 Å that the model's repair did not remove (the
    CLI's ``warning:`` line; the rows are returned all the same). ``rows``: how many; ``named``: the first 20 as
    the CLI's run summary names them ({"frame", "sample", "pairs", "closest"})."""

    def __init__(self, message: str, rows: int, named: list[dict]):
        super().__init__(message)
        self.rows, self.named = rows, named


def backmap(traj, samples: int = 1, seed: int = 0, model=None, steps: int | None = None,
            temperature: float | None = None, batch_frames: int = 64, residue_map: dict | None = None):
    """Backmap a coarse-grained trajectory.

    traj: ``mdtraj.Trajectory`` whose atoms include one CA per residue (other atoms are ignored); samples: samples
    per frame; seed: random seed; model: None (the default model), 'ideal', a model directory or a loaded
    backmapper. Returns an ``mdtraj.Trajectory`` of all heavy atoms with F·samples frames in frame-major order
    (frame f, sample s → frame f·samples + s), time and unit cell copied per row. Rows that keep a non-bonded
    heavy-atom pair closer than 1.2 Å (where the repair could not reach it) are returned all the same, and named
    in one :class:`CloseContactWarning`.
    """
    import warnings

    import mdtraj as md
    import numpy as np
    import torch

    from ldb_hpc.chem.residues import NUM_SLOTS
    from ldb_hpc.errors import InputError
    from ldb_hpc.geometry.contacts import CUTOFF, CloseContacts
    from ldb_hpc.io.mdtraj_bridge import traj_to_atom14
    from ldb_hpc.io.topology import aa_topology
    from ldb_hpc.model.backmappers import load_backmapper

    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    residues, pos, mask = traj_to_atom14(traj, residue_map=residue_map)
    if not mask[:, 1].all():
        raise InputError("every residue needs a CA atom")
    ca = pos[:, :, 1]  # [F, L, 3] Å
    if not np.isfinite(ca).all():
        raise InputError("the trajectory has non-finite CA coordinates")
    bm = model if hasattr(model, "backmap") else load_backmapper(model, steps=steps, temperature=temperature)
    topo_json, atom_index, n_atoms = aa_topology(residues)
    topology = _md_topology(topo_json)
    out = np.zeros((traj.n_frames * samples, n_atoms, 3), dtype=np.float32)
    flat = atom_index.reshape(-1)
    have = flat >= 0
    contacts = CloseContacts(residues)
    for s0 in range(0, traj.n_frames, batch_frames):
        s1 = min(s0 + batch_frames, traj.n_frames)
        xyz = bm.backmap(torch.from_numpy(np.ascontiguousarray(ca[s0:s1])), residues,
                         torch.arange(s0, s1, dtype=torch.int64), samples, seed)  # [n, S, L, 14, 3]
        contacts.check(s0, xyz.numpy())
        rows = xyz.reshape(-1, len(residues) * NUM_SLOTS, 3).numpy()
        out[s0 * samples:s1 * samples, flat[have]] = rows[:, have] / 10.0
    time = np.repeat(traj.time, samples)
    cell_l = None if traj.unitcell_lengths is None else np.repeat(traj.unitcell_lengths, samples, axis=0)
    cell_a = None if traj.unitcell_angles is None else np.repeat(traj.unitcell_angles, samples, axis=0)
    if contacts.rows:
        first = contacts.named[0]
        warnings.warn(CloseContactWarning(
            f"{contacts.rows} row(s) keep a heavy-atom pair closer than {CUTOFF} Å that the model's repair did not "
            f"remove (returned all the same), first: frame {first['frame']} sample {first['sample']} "
            f"({first['closest']})", contacts.rows, contacts.named), stacklevel=2)
    return md.Trajectory(out, topology, time=time, unitcell_lengths=cell_l, unitcell_angles=cell_a)


def _md_topology(topo_json: dict):
    """mdtraj.Topology from the MDTraj-HDF5 topology JSON that ldb_hpc.io.topology builds."""
    import mdtraj as md

    top = md.Topology()
    atoms = []
    for ch in topo_json["chains"]:
        chain = top.add_chain()
        for res in ch["residues"]:
            r = top.add_residue(res["name"], chain, resSeq=res.get("resSeq", 0))
            for at in res["atoms"]:
                atoms.append(top.add_atom(at["name"], md.element.get_by_symbol(at["element"]), r))
    for a, b in topo_json["bonds"]:
        top.add_bond(atoms[a], atoms[b])
    return top
