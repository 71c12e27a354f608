"""Python API for notebooks: backmap an mdtraj trajectory in memory, through the CLI's engine."""

from __future__ import annotations

from ldb_hpc.geometry.contacts import ContactRow


class CloseContactWarning(UserWarning):
    """Some returned rows keep a heavy-atom pair closer than 1.2 Å that the model's repair did not remove (the
    CLI's ``warning:`` line; the rows are returned all the same). ``rows``: how many; ``named``: the first 20 as
    the CLI's run summary names them (:class:`~ldb_hpc.geometry.contacts.ContactRow`: frame, sample, pairs,
    closest)."""

    def __init__(self, message: str, rows: int, named: list[ContactRow]):
        super().__init__(message)
        self.rows, self.named = rows, named


def backmap(traj, samples: int = 1, seed: int = 0, model=None, steps: int | None = None,
            temperature: float | None = None, batch_frames: int = 64, residue_map: dict | None = None,
            hydrogens: bool = False, device: str = "auto", threads: int | None = None, cg: str | None = None,
            disulfides: str = "auto"):
    """Backmap a coarse-grained trajectory.

    traj: ``mdtraj.Trajectory`` whose atoms include one CA per residue (other atoms are ignored); samples: samples
    per frame; seed: random seed; model: None (the default model), 'ideal', a model directory or a loaded
    backmapper; steps, temperature: sampling settings (None: the model's); batch_frames: frames per model call;
    residue_map: {OLD: NEW} residue renames; hydrogens: also OXT at segment ends and every hydrogen, with the
    disulfides found on frame 0 (as ``ldb-hpc backmap --hydrogens``); device: auto | cpu | cuda | cuda:N; threads:
    torch threads (None: leave torch's setting); cg: the coarse-grained mapping (ca, com, martini3;
    ldb_hpc.engine.sources; None: martini3 when the topology has BB beads, else ca); disulfides: ``auto`` (decided
    on frame 0's backbone and built in every frame), ``none``, or ``"A:12-A:40,…"`` (the returned topology bonds
    them SG–SG).
    Returns an ``mdtraj.Trajectory`` with F·samples frames in frame-major order (frame f, sample s → frame
    f·samples + s), time and unit cell copied per row; the rows are those ``ldb-hpc backmap`` writes with the same
    options. Rows that keep a non-bonded heavy-atom pair closer than 1.2 Å (where the repair could not reach it)
    are returned all the same, and named in one :class:`CloseContactWarning`.
    """
    import warnings

    import numpy as np

    from ldb_hpc.chem.hydrogens import Protonation
    from ldb_hpc.engine import devices
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job
    from ldb_hpc.engine.sinks import MemorySink
    from ldb_hpc.engine.sources import open_source
    from ldb_hpc.errors import InputError
    from ldb_hpc.geometry.contacts import CloseContacts

    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    if cg is None:
        from ldb_hpc.engine.sources import detect_mapping

        cg = detect_mapping(traj)
    job = Job(model=model, samples=samples, seed=seed, steps=steps, temperature=temperature,
              residue_map=dict(residue_map or {}), hydrogens=hydrogens, device=device, batch_frames=batch_frames,
              threads=threads, cg=cg, disulfides=disulfides)
    job.check_ranges()
    source = open_source(traj, cg, residue_map=job.residue_map)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    engine = Engine(job, devices.select_device(device))
    residues = source.residues
    protonation = None
    if hydrogens:
        from ldb_hpc.chem.hydrogens import check_protonatable
        from ldb_hpc.io.topology import residue_labels

        problem = check_protonatable(residues.restype, residue_labels(residues.chain_id, residues.resseq))
        if problem:
            raise InputError(problem)
    residues = engine.topology(source.read(0, 1).ca, residues)
    if hydrogens:
        protonation = Protonation.from_pairs(residues.disulfides)
    sink = MemorySink(residues, source.n_frames, samples, protonation)
    contacts = CloseContacts(residues)
    for s0 in range(0, source.n_frames, batch_frames):
        frames = source.read(s0, min(s0 + batch_frames, source.n_frames))
        sink.write(s0, engine.rows(frames.ca, residues, np.arange(frames.start, frames.stop), protonation,
                                   contacts, frame_start=s0))
    report = contacts.report()
    if report.rows:
        warnings.warn(CloseContactWarning(report.api_message(), report.rows, report.named), stacklevel=2)
    lengths, angles = source.cell_nm_deg or (None, None)
    return sink.trajectory(source.time, lengths, angles)
