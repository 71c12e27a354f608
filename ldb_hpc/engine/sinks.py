"""Where computed rows go. Every sink takes the rows of :meth:`ldb_hpc.engine.compute.Engine.rows`
([n, S, L, K, 3] float32 Å, frame-major: frame f, sample s → row f·S + s) and never drops one.

- :class:`MemorySink`: an ``mdtraj.Trajectory`` in memory (the Python API);
- :class:`StructureFileSink`: one output per structure file (PDB or MDTraj-HDF5), each written complete under a
  temporary name then renamed (the many-files run);
- :class:`StreamSink`: PDB text on a stream (standard output);
- the trajectory run's shard files + virtual-dataset master and its collective MPI-IO file are in
  ldb_hpc.runtime.sinks (they need the run folder's resume records and, for MPI-IO, the communicator).
"""

from __future__ import annotations

import os

import numpy as np

from ldb_hpc.chem.hydrogens import Protonation
from ldb_hpc.chem.protein import Residues
from ldb_hpc.io import structure_files as sf
from ldb_hpc.io.topology import output_topology


class MemorySink:
    """All rows of ``n_frames`` frames × ``samples`` in one array, returned as an ``mdtraj.Trajectory`` of the output
    atoms (heavy atoms, or with OXT and hydrogens when ``protonation`` is given) in the order the CLI writes them."""

    def __init__(self, residues: Residues, n_frames: int, samples: int, protonation: Protonation | None = None):
        self.topology_json, atom_index, n_atoms = output_topology(residues, protonation)
        flat = atom_index.reshape(-1)
        self._gather = np.nonzero(flat >= 0)[0]
        self.samples = samples
        self.xyz = np.zeros((n_frames * samples, n_atoms, 3), dtype=np.float32)  # nm

    def write(self, frame_start: int, rows: np.ndarray) -> None:
        """Rows [n, S, L, K, 3] Å of frames ``frame_start ..``."""
        n, S = rows.shape[:2]
        flat = rows.reshape(n * S, -1, 3)
        self.xyz[frame_start * S:(frame_start + n) * S] = flat[:, self._gather] / 10.0

    def trajectory(self, time: np.ndarray, cell_lengths=None, cell_angles=None):
        """The rows as an ``mdtraj.Trajectory``: ``time`` [F] ps and the cell ([F, 3] nm, degrees) copied per row."""
        import mdtraj as md

        S = self.samples
        lengths = None if cell_lengths is None else np.repeat(cell_lengths, S, axis=0)
        angles = None if cell_angles is None else np.repeat(cell_angles, S, axis=0)
        return md.Trajectory(self.xyz, mdtraj_topology(self.topology_json), time=np.repeat(time, S),
                             unitcell_lengths=lengths, unitcell_angles=angles)


def mdtraj_topology(topo_json: dict):
    """``mdtraj.Topology`` from the MDTraj-HDF5 topology JSON that ldb_hpc.io.topology builds."""
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


class StructureFileSink:
    """One output file per input structure file: ``fmt`` 'pdb' (one MODEL per row) or 'h5' (MDTraj-HDF5 with the
    provenance); each written complete or not at all, with the disulfides of ``residues`` (or of ``protonation``) as
    bonds and the input's ``cell`` (ldb_hpc.io.structure_files.CAFrames.cell: lengths [F, 3] Å, angles [F, 3]
    degrees; None: the input has none). ``provenance``: the run's (the input's name is added)."""

    def __init__(self, fmt: str, provenance: dict, overwrite: bool = False):
        self.fmt, self.provenance, self.overwrite = fmt, provenance, overwrite

    def write(self, output: str, input: str, residues: Residues, rows: np.ndarray,
              protonation: Protonation | None = None, cell=None) -> None:
        prov = dict(self.provenance, input=os.path.basename(input))
        sf.write_rows(output, self.fmt, residues, rows, prov, overwrite=self.overwrite, protonation=protonation,
                      cell=cell)


class StreamSink:
    """PDB text of each structure's rows on a text stream (standard output), flushed after each structure; disulfides
    and ``cell`` as :class:`StructureFileSink`."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, residues: Residues, rows: np.ndarray, protonation: Protonation | None = None, cell=None) -> None:
        self.stream.write(sf.pdb_text(residues, rows, protonation, cell))
        self.stream.flush()
