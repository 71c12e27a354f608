"""The GPU path without a GPU (issue 21): fallbacks are loud, fused-kernel calls are counted, and one batch costs a
bounded number of host–device synchronisations and host uploads.

A GPU run that would silently fall back to the torch reference ops (triton missing or broken, or
``TRITON_INTERPRET=1`` left in the environment) is an ``error:`` line before any output is touched; the run
summary counts the fused-op calls by implementation. The sync budget is counted on the CPU with
:class:`ldb_hpc.ops.audit.HostTraffic` (aten ops that read device data back or size their output by it, and the
Python-level reads and uploads), the same code path a GPU runs.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error

from ldb_hpc import ops
from ldb_hpc.engine import devices
from ldb_hpc.engine.compute import DisulfideLog
from ldb_hpc.errors import InputError
from ldb_hpc.geometry.contacts import CloseContacts
from ldb_hpc.ops import backends
from ldb_hpc.ops.audit import HostTraffic
from ldb_hpc.runtime.records import kernel_text

EXAMPLE = REPO / "examples" / "example.cg.h5"


@pytest.fixture
def no_triton(monkeypatch):
    """triton cannot be imported (as on a node whose torch has none): ldb_hpc._triton does not load."""
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # test_ops_triton sets it for the whole worker
    monkeypatch.setattr(backends, "_TRITON_ERROR", [])
    backends._triton_ops.cache_clear()
    yield
    backends._triton_ops.cache_clear()


def test_cuda_without_triton_is_one_error_line(run_cli, tmp_path, monkeypatch, no_triton):
    monkeypatch.setattr(devices, "visible_gpus", lambda: 1)  # a GPU node, as far as device selection goes
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    out = tmp_path / "out.h5"
    code, _, err = run_cli("backmap", EXAMPLE, "-o", out, "--device", "cuda", "--no-progress")
    assert_one_line_error(code, err, "Triton kernels cannot run")
    assert "import of triton halted" in err and f"{ops.ENV_VAR}=reference" in err  # the reason, named
    assert not list(tmp_path.iterdir())  # nothing written


def test_reference_kernels_on_cuda_only_when_asked(monkeypatch, no_triton):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    with pytest.raises(InputError, match="Triton kernels cannot run"):
        ops.require_kernels("cuda")
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.require_kernels("cuda") == "reference"
    assert ops.require_kernels("cpu") == "reference"  # forced everywhere, the CPU included


def test_triton_interpreter_on_cuda_is_refused(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(InputError, match="TRITON_INTERPRET=1 is set"):
        ops.require_kernels("cuda")
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.require_kernels("cuda") == "reference"


def test_summary_counts_fused_kernel_calls(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    out = tmp_path / "out.h5"
    code, stdout, err = run_cli("backmap", EXAMPLE, "-o", out, "--no-progress", "--model", "ideal")
    assert code == 0, err
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    name = ops.backend("cpu")
    calls = summary["kernel_calls"]
    assert set(calls) == {name} and calls[name] > 0, calls
    assert summary["per_rank"][0]["kernel_calls"] == calls
    assert kernel_text([name], calls) in stdout

    monkeypatch.setenv(ops.ENV_VAR, "reference")  # every op on the torch reference: counted as such
    code, stdout, err = run_cli("backmap", EXAMPLE, "-o", out, "--no-progress", "--model", "ideal", "--overwrite")
    assert code == 0, err
    calls = json.loads((tmp_path / "out.h5.summary.json").read_text())["kernel_calls"]
    assert set(calls) == {"reference"} and calls["reference"] > 0


def test_kernel_text_names_reference_fallbacks():
    assert kernel_text(["triton"], {"triton": 800}) == "triton kernels, 800 calls"
    assert kernel_text(["triton"], {"triton": 800, "reference": 12}) == \
        "triton kernels, 800 calls + 12 on the torch reference"
    assert kernel_text(["reference"], {"reference": 5}) == "reference kernels, 5 calls"
    assert kernel_text(["cpu"], {}) == "cpu kernels, 0 calls"


def test_float64_input_is_counted_as_reference():
    before = ops.kernel_calls().get("reference", 0)
    z = torch.randn(5, 8, dtype=torch.float64)
    ops.vq_nearest(z, torch.randn(16, 8, dtype=torch.float64))
    assert ops.kernel_calls().get("reference", 0) == before + 1


# ----------------------------------------------------------------------------------------------------------
# host traffic per batch (issue 21 item 3): the static path the GPU runs, counted on the CPU

SYNC_BUDGET = 8  # host–device synchronisations per batch (the one read-back of the batch is 1)
UPLOAD_BUDGET = 4  # host data uploaded per batch (the CA frames and their indices)


def _batch_input(frames: int):
    from ldb_hpc.engine.sources import open_source

    src = open_source(str(EXAMPLE), "ca")
    ca = src.read(0, src.n_frames).ca
    ca = np.concatenate([ca] * (frames // len(ca) + 1))[:frames]
    return src.residues, ca, np.arange(frames, dtype=np.int64)


def _steady_engine(frames: int, **job):
    """An engine on the static path after two warm-up batches (its slots learned), and its input."""
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job

    torch.set_num_threads(1)
    residues, ca, index = _batch_input(frames)
    engine = Engine(Job(batch_frames=frames, **job), selection="static")
    residues = engine.topology(ca[:1], residues)
    for _ in range(2):
        engine.rows(ca, residues, index, None, CloseContacts(residues), disulfide_log=DisulfideLog())
    return engine, residues, ca, index


@pytest.mark.parametrize("frames", [2, 8])
def test_one_batch_stays_within_the_sync_and_upload_budget(frames):
    """One batch of the default model on the static path: at most SYNC_BUDGET syncs and UPLOAD_BUDGET uploads,
    the same for 2 and 8 frames (the count does not grow with the batch or with what needs repair)."""
    engine, residues, ca, index = _steady_engine(frames)
    recomputed = engine.recomputed
    with HostTraffic() as traffic:
        engine.rows(ca, residues, index, None, CloseContacts(residues), disulfide_log=DisulfideLog())
    assert engine.recomputed == recomputed, "the counted batch overflowed its slots"
    assert traffic.syncs <= SYNC_BUDGET, traffic.report()
    assert traffic.uploads <= UPLOAD_BUDGET, traffic.report()
    assert traffic.syncs == 1, traffic.report()  # today: the batch's one read-back


def test_audit_counts_what_it_should():
    """The counter itself: a boolean mask, an .item(), a nonzero, a .cpu() and a table moved to a device count."""
    x = torch.arange(6.0)
    with HostTraffic() as traffic:
        x[x > 2].sum()
        float(x.sum())
        torch.nonzero(x)
        x.cpu()
        torch.ones(3).to("cpu")
        torch.nonzero_static(x > 2, size=4)  # fixed-size: not a sync
    assert traffic.syncs == 4, traffic.report()
    assert traffic.uploads == 1, traffic.report()


@pytest.mark.parametrize("job", [{}, {"disulfides": "A:65-A:130"}], ids=["auto", "bonded"])
def test_static_and_exact_paths_give_the_same_rows(job):
    """The GPU's static selection and the CPU's exact one choose the same rows: outputs equal within float noise
    (a row's arithmetic may run in a differently sized call), the same close-contact and disulfide logs; with
    hydrogens too."""
    from ldb_hpc.chem.hydrogens import Protonation
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job

    engine, residues, ca, index = _steady_engine(4, **job)
    exact = Engine(Job(batch_frames=4, **job), selection="exact")
    protonation = Protonation.from_pairs(residues.disulfides)
    logs = {}
    for name, eng in (("static", engine), ("exact", exact)):
        contacts, ss_log = CloseContacts(residues), DisulfideLog()
        rows = eng.rows(ca, residues, index, protonation, contacts, disulfide_log=ss_log)
        logs[name] = (rows, contacts.report().rows, ss_log.count, ss_log.first)
    np.testing.assert_allclose(logs["static"][0], logs["exact"][0], atol=1e-4)
    assert logs["static"][1:] == logs["exact"][1:]


def test_contact_precheck_flags_every_row_the_clash_rule_flags():
    """The device pre-check (pairs < 1.21 Å that are not 1-2 or 1-3) flags a superset of the rows the exact clash
    rule flags — on the ideal model's rows of the example, which keep real clashes — and only a few more."""
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job
    from ldb_hpc.geometry.contacts import close_rows

    residues, ca, index = _batch_input(16)
    rows = Engine(Job(model="ideal", batch_frames=16), selection="exact").rows(ca, residues, index)
    exact = CloseContacts(residues)
    exact.check(0, rows[..., :14, :])
    named = {c.frame for c in exact.report().named}
    flags = close_rows(torch.from_numpy(rows[:, 0, :, :14]), torch.as_tensor(residues.restype),
                       torch.as_tensor(residues.segment)).numpy()
    assert exact.rows > 0 and named <= set(np.nonzero(flags)[0])
    assert flags.sum() == exact.rows  # nothing the rule leaves out is flagged here (bonds, angles)
