"""The engine's parts called directly: the job's checks, the compute step, frame sources and sinks."""

from __future__ import annotations

import dataclasses
import io

import mdtraj as md
import numpy as np
import pytest
from conftest import REPO

from ldb_hpc.chem.hydrogens import NUM_EXTRA, Protonation
from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPE_INDEX
from ldb_hpc.engine.compute import Engine
from ldb_hpc.engine.job import Job
from ldb_hpc.engine.sinks import MemorySink, StreamSink, StructureFileSink
from ldb_hpc.engine.sources import SOURCES, CASource, open_source, register_source
from ldb_hpc.errors import InputError
from ldb_hpc.geometry.contacts import CloseContacts

EXAMPLE = REPO / "examples" / "example.cg.h5"


@pytest.fixture(scope="module")
def example():
    with open_source(str(EXAMPLE)) as src:
        return src.residues, src.read(0, 6)


# ------------------------------------------------------------------------------------------------
# job


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_frames": 0}, "--batch-frames must be at least 1, got 0"),
    ({"samples": 0}, "--samples must be at least 1, got 0"),
    ({"threads": 0}, "--threads must be at least 1, got 0"),
])
def test_job_names_the_option_out_of_range(kwargs, message):
    with pytest.raises(InputError, match=message):
        Job(**kwargs).check_ranges()
    Job().check_ranges()  # the defaults are valid


def test_job_device_spec_is_checked_before_any_work():
    with pytest.raises(InputError, match="--device must be auto, cpu, cuda or cuda:N"):
        Job(device="gpu").check_device()
    Job(device="cpu").check_device()


# ------------------------------------------------------------------------------------------------
# compute


def test_rows_do_not_depend_on_the_batch_the_frames_are_in(example):
    """Noise is keyed by the global frame index: four frames in calls of 1, 3 or 4 give the same rows; rows of
    frames 2..3 computed alone equal rows 2..3 of the whole."""
    residues, frames = example
    ca, index = frames.ca[:4], np.arange(4)
    whole = Engine(Job(samples=2, seed=3, batch_frames=4)).rows(ca, residues, index)
    assert whole.shape == (4, 2, len(residues), NUM_SLOTS, 3) and whole.dtype == np.float32
    for b in (1, 3):
        np.testing.assert_allclose(Engine(Job(samples=2, seed=3, batch_frames=b)).rows(ca, residues, index),
                                   whole, atol=2e-4)
    part = Engine(Job(samples=2, seed=3)).rows(ca[2:], residues, index[2:])
    np.testing.assert_allclose(part, whole[2:], atol=2e-4)
    assert not np.allclose(whole[:, 0], whole[:, 1])  # samples differ
    other = Engine(Job(samples=2, seed=4)).rows(ca, residues, index)
    assert not np.allclose(other, whole)  # the seed matters


def test_rows_with_extras_keep_the_heavy_atoms_bit_for_bit(example):
    residues, frames = example
    engine = Engine(Job(model="ideal"))
    heavy = engine.rows(frames.ca, residues, np.arange(len(frames)))
    full = engine.rows(frames.ca, residues, np.arange(len(frames)), Protonation.from_pairs([]))
    assert full.shape[-2] == NUM_SLOTS + NUM_EXTRA
    assert np.array_equal(full[..., :NUM_SLOTS, :], heavy)
    assert np.abs(full[..., NUM_SLOTS:, :]).sum() > 0  # hydrogens were placed


def test_rows_feed_the_close_contact_log(example):
    """The ideal model leaves pairs < 1.2 Å in the example (the API and CLI tests rely on that too): the log counts
    them per row and names them from ``frame_start``."""
    residues, frames = example
    engine = Engine(Job(model="ideal", samples=2))
    log = CloseContacts(residues)
    engine.rows(frames.ca, residues, np.arange(len(frames)), contacts=log, frame_start=100)
    report = log.report()
    assert report.rows > 0 and report.rows % 2 == 0  # the ideal model's two samples are the same
    assert all(100 <= r.frame < 100 + len(frames) and r.sample in (0, 1) for r in report.named)
    assert report.named[0].closest.endswith("Å")


def test_disulfides_backmap_frame_zero_only_when_two_cysteines_can_bond(example):
    """SG lies within 2.8 Å of its CA: CYS whose CAs are more than 7.8 Å apart cannot bond, and then the first
    frame is not backmapped at all; closer ones are decided on the backmap's first row (before the SG build)."""
    from ldb_hpc.geometry import disulfides as ss

    residues, frames = example

    class Refuses:  # a backmapper that fails when called
        name, hash, steps = "none", "sha256:0", 0

        def backmap(self, *args, **kwargs):
            raise AssertionError("backmap called")

    cys = dataclasses.replace(residues, restype=residues.restype.copy())
    cys.restype[[2, 9]] = RESTYPE_INDEX["CYS"]
    ca = frames.ca[:1].copy()
    gap = np.linalg.norm(ca[0, 2] - ca[0, 9])
    ca[0, 9] += (ca[0, 9] - ca[0, 2]) * (8.0 / gap - 1)  # CA–CA 8 Å: cannot bond
    assert Engine(Job(model=Refuses())).topology(ca, cys).disulfides == ()
    assert Engine(Job(model=Refuses(), disulfides="none")).topology(ca, cys).disulfides == ()
    ca[0, 9] = ca[0, 2] + (ca[0, 9] - ca[0, 2]) * (5.0 / 8.0)  # 5 Å: it must look
    with pytest.raises(AssertionError, match="backmap called"):
        Engine(Job(model=Refuses())).topology(ca, cys)
    ideal = Engine(Job(model="ideal"))
    raw = ideal.sample(ca, cys, np.zeros(1, dtype=np.int64))[0, 0]
    assert ideal.topology(ca, cys).disulfides == tuple(ss.decide(raw, cys.restype))
    label = [f"{c}:{r}" for c, r in zip(cys.chain_id, cys.resseq)]
    listed = Engine(Job(model=Refuses(), disulfides=f"{label[9]}-{label[2]}")).topology(ca, cys)
    assert listed.disulfides == ((2, 9),)


# ------------------------------------------------------------------------------------------------
# sources


def test_a_path_and_a_trajectory_in_memory_give_the_same_frames():
    traj = md.load(str(EXAMPLE))
    with open_source(str(EXAMPLE)) as path_src, open_source(traj) as mem:
        assert mem.n_frames == path_src.n_frames == traj.n_frames
        assert np.array_equal(mem.residues.restype, path_src.residues.restype)
        assert np.array_equal(mem.residues.segment, path_src.residues.segment)
        a, b = path_src.read(3, 7), mem.read(3, 7)
        assert (a.start, a.stop) == (b.start, b.stop) == (3, 7)
        np.testing.assert_allclose(a.ca, b.ca, atol=1e-5)
        assert np.array_equal(a.time, b.time)


def test_memory_source_refuses_what_cannot_be_backmapped():
    traj = md.load(str(EXAMPLE))[:2]
    bad = traj[:]
    bad.xyz = bad.xyz.copy()
    bad.xyz[1, 4] = np.nan
    with pytest.raises(InputError, match="non-finite CA"):
        open_source(bad)
    no_ca = traj[:]
    no_ca.topology = no_ca.topology.copy()
    no_ca.topology.atom(2).name = "CB"
    with pytest.raises(InputError, match="every residue needs a CA atom"):
        open_source(no_ca)


def test_mappings_are_resolved_through_one_table():
    assert SOURCES["ca"] is CASource
    with pytest.raises(InputError, match="unknown coarse-grained mapping .nope.; known: ca, com, martini3$"):
        open_source(str(EXAMPLE), "nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_source("ca")(CASource)


# ------------------------------------------------------------------------------------------------
# sinks


def test_memory_sink_lays_rows_out_frame_major(example):
    residues, frames = example
    rows = Engine(Job(samples=3)).rows(frames.ca[:2], residues, np.arange(2))
    sink = MemorySink(residues, 4, 3)
    sink.write(2, rows)  # frames 2..3 only: frames 0..1 stay zero
    traj = sink.trajectory(np.arange(4) * 10.0)
    assert traj.n_frames == 12 and traj.n_atoms == int((rows[0, 0].sum(-1) != 0).sum())
    assert np.array_equal(traj.time, np.repeat(np.arange(4) * 10.0, 3))
    assert not traj.xyz[:6].any()
    flat = rows.reshape(6, -1, 3)
    ca = [i for i, a in enumerate(traj.topology.atoms) if a.name == "CA"]
    np.testing.assert_allclose(traj.xyz[6:, ca] * 10, flat[:, 1::NUM_SLOTS], atol=1e-5)  # slot 1 is CA


def test_structure_and_stream_sinks_write_what_mdtraj_reads(example, tmp_path):
    residues, frames = example
    rows = Engine(Job(model="ideal", samples=2)).rows(frames.ca[:2], residues, np.arange(2))
    StructureFileSink("pdb", {"model": "ideal"}).write(str(tmp_path / "a.pdb"), "in.pdb", residues, rows)
    StructureFileSink("h5", {"model": "ideal"}).write(str(tmp_path / "a.h5"), "in.pdb", residues, rows)
    text = io.StringIO()
    StreamSink(text).write(residues, rows)
    (tmp_path / "s.pdb").write_text(text.getvalue())
    pdb, h5, stream = (md.load(str(tmp_path / n)) for n in ("a.pdb", "a.h5", "s.pdb"))
    assert pdb.n_frames == h5.n_frames == stream.n_frames == 4
    np.testing.assert_allclose(pdb.xyz, h5.xyz, atol=1e-3)  # PDB keeps 3 decimals of Å
    assert np.array_equal(pdb.xyz, stream.xyz)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing left under a temporary name
