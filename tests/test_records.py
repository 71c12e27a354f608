"""The trajectory run's typed records, set-up and resume, called directly (the CLI tests run them end to end)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_runtime import make_cg

from ldb_hpc.engine.job import Job
from ldb_hpc.engine.sources import open_source
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.geometry.contacts import NAMED, CloseContactReport, ContactRow
from ldb_hpc.runtime import output as out_mod
from ldb_hpc.runtime import resume
from ldb_hpc.runtime.comm import SerialComm
from ldb_hpc.runtime.messages import broadcast_outcome
from ldb_hpc.runtime.records import Disulfides, Hydrogens, InputIdentity, IOMode, RunRecord
from ldb_hpc.runtime.run_setup import BackmapConfig, setup
from ldb_hpc.runtime.sharding import ChunkPlan
from ldb_hpc.runtime.sinks import RunSink


class _Model:
    name, hash, sampling = "m", "sha256:aaaa", {"steps": 8, "temperature": None}


IDENT = InputIdentity("/x/in.h5", 100, 24, 20, "sha256:t", "sha256:f")


def _record(**kw):
    args = dict(identity=IDENT, model=_Model(), seed=0, samples=1, io=IOMode.SHARDS, plan=ChunkPlan(24, 8, 2),
                has_cell=False, provenance={"model": "m"})
    args.update(kw)
    return RunRecord.create(**args)


def test_run_record_round_trips_through_its_json():
    rec = _record(hydrogens=Hydrogens("note"), disulfides=Disulfides(((2, 9),), "auto", ("A:3-A:10",)))
    text = json.dumps(rec.to_json())
    back = RunRecord.from_json(json.loads(text))
    assert back == rec
    assert json.loads(text)["io"] == "shards" and json.loads(text)["disulfides"]["bonds"] == [[2, 9]]
    assert json.loads(text)["hydrogens"] == {"note": "note"}  # the pairs once more: no longer
    old = json.loads(text)
    old["hydrogens"]["disulfides"] = [[2, 9]]  # a record written before: still read
    assert RunRecord.from_json(old) == rec
    assert "hydrogens" not in _record().to_json()  # absent unless --hydrogens


def test_run_id_hashes_what_a_resume_must_share():
    rec = _record()
    moved = _record(identity=InputIdentity("/elsewhere/in.h5", 100, 24, 20, "sha256:t", "sha256:f"))
    assert moved.run_id == rec.run_id  # the path and the creation time are not part of it
    for other in (_record(seed=1), _record(samples=2), _record(io=IOMode.MPIO), _record(plan=ChunkPlan(24, 4, 2))):
        assert other.run_id != rec.run_id


def test_differences_name_each_mismatch():
    rec = _record()
    assert rec.differences(_record()) == []
    other = _record(identity=InputIdentity("/x/in.h5", 100, 25, 20, "sha256:t", "sha256:g"), seed=3,
                    io=IOMode.MPIO, hydrogens=Hydrogens("n"))
    assert rec.differences(other) == ["input frames (24 vs 25)", "input coordinates", "seed (0 vs 3)",
                                      "io (shards vs mpio)", "--hydrogens (off vs on)"]
    m = _Model()
    m.hash = "sha256:bbbb"
    assert rec.differences(_record(model=m)) == ["model (m sha256:aaaa vs m sha256:bbbb)"]


def test_a_malformed_run_record_is_one_input_error(tmp_path):
    rec = _record().to_json()
    del rec["plan"]
    (tmp_path / out_mod.RUN_FILE).write_text(json.dumps(rec))
    with pytest.raises(InputError, match="is not a readable ldb-hpc run record"):
        resume.read_run_record(str(tmp_path))
    assert resume.read_run_record(str(tmp_path / "none")) is None


def test_close_contact_reports_merge_in_frame_order_and_keep_the_first_named():
    a = CloseContactReport(rows=3, named=[ContactRow(9, 0, 1, "x"), ContactRow(2, 1, 2, "y")])
    b = CloseContactReport(rows=NAMED, named=[ContactRow(k, 0, 1, f"z{k}") for k in range(3, 3 + NAMED)])
    merged = CloseContactReport.merge([a, b])
    assert merged.rows == 3 + NAMED and len(merged.named) == NAMED
    assert [r.frame for r in merged.named[:3]] == [2, 3, 4]
    assert CloseContactReport.from_json(json.loads(json.dumps(merged.to_json()))) == merged
    line = merged.warning("s.json")
    assert line.startswith(f"warning: {3 + NAMED} row(s) keep a heavy-atom pair closer than 1.2 Å")
    assert "first: frame 2 sample 1 (y); listed in s.json" in line
    assert CloseContactReport().warning("s.json") is None


def test_broadcast_outcome_returns_or_reraises_on_rank_zero():
    comm = SerialComm()
    assert broadcast_outcome(comm, lambda: 42) == 42
    with pytest.raises(OutputError, match="no room"):  # the original exception, type kept
        broadcast_outcome(comm, lambda: (_ for _ in ()).throw(OutputError("no room")))
    with pytest.raises(ZeroDivisionError):
        broadcast_outcome(comm, lambda: 1 / 0)


# ------------------------------------------------------------------------------------------------
# set-up, resume, the run sink


def test_setup_creates_the_run_folder_then_resume_rules_apply(tmp_path):
    cg = str(make_cg(tmp_path / "in.cg.h5", n_frames=10))
    out = str(tmp_path / "out.h5")
    cfg = BackmapConfig(input=cg, output=out, job=Job(model="ideal", batch_frames=4))
    state = setup(cfg, size=2)
    assert not state.complete and state.folder == out_mod.run_dir(out)
    assert state.record.plan == ChunkPlan(10, 4, 2) and state.record.io is IOMode.SHARDS
    assert resume.read_run_record(state.folder) == state.record
    with pytest.raises(OutputError, match="an incomplete output of an interrupted run exists"):
        setup(cfg, size=2)
    again = setup(BackmapConfig(input=cg, output=out, job=Job(model="ideal", batch_frames=8), resume=True), size=1)
    assert again.record == state.record  # the recorded plan is kept, whatever --batch-frames says now
    with pytest.raises(InputError, match=r"cannot resume .*seed \(0 vs 5\)"):
        setup(BackmapConfig(input=cg, output=out, job=Job(model="ideal", seed=5), resume=True), size=1)
    fresh = setup(BackmapConfig(input=cg, output=out, job=Job(model="ideal", seed=5), overwrite=True), size=1)
    assert fresh.record.seed == 5 and fresh.record.run_id != state.record.run_id


def test_run_sink_records_each_written_chunk_and_a_reopened_sink_skips_it(tmp_path):
    from ldb_hpc.engine.compute import Engine

    cg = str(make_cg(tmp_path / "in.cg.h5", n_frames=10))
    out = str(tmp_path / "out.h5")
    state = setup(BackmapConfig(input=cg, output=out, job=Job(model="ideal", batch_frames=4)), size=1)
    rec, comm = state.record, SerialComm()
    engine = Engine(Job(model="ideal"))
    with open_source(cg) as src:
        frames = src.read(4, 8)
        rows = engine.rows(frames.ca, src.residues, np.arange(4, 8))
        with RunSink(rec, state.folder, [0], src.residues, comm) as sink:
            assert [sink.pending(0, k) for k in range(3)] == [True, True, True]
            sink.write(0, 1, frames, rows)
        status = resume.run_status(state.folder)
        assert status.frames_done == 4 and not status.complete
        with RunSink(rec, state.folder, [0], src.residues, comm) as sink:
            assert [sink.pending(0, k) for k in range(3)] == [True, False, True]
        os.remove(out_mod.shard_path(state.folder, 0))  # a shard file created anew forgets its chunks
        with RunSink(rec, state.folder, [0], src.residues, comm) as sink:
            assert sink.pending(0, 1)
