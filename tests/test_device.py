"""Every rank computes on one device (issue 11): device selection, the --device option, and proof without a GPU
that the model path creates no tensor on the wrong device.

The proof runs the featurizer, the networks, the DDIM sampler, the VQ snap, the decoders and every part of the
atom builder that has no data-dependent shape on *fake CUDA tensors* (tests/fake_cuda.py): a CPU tensor mixed into
a CUDA computation raises FakeTensorDeviceMismatchError. The parts with data-dependent shapes (backbone settling,
proline rings, clash repair) cannot run there; for them every torch factory call must pass a device (checked on
their source).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error
from fake_cuda import AtenIndexing, fake_cuda_module
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode

from ldb_hpc import ops
from ldb_hpc.engine import devices
from ldb_hpc.errors import InputError

# ----------------------------------------------------------------------------------------------------------
# device selection


@pytest.mark.parametrize("spec, local_rank, local_size, n_gpus, expected", [
    ("cpu", 0, 1, 4, None),
    ("auto", 0, 1, 0, None),  # no GPU: the CPU
    ("auto", 3, 4, 4, 3),  # one GPU per rank by local rank
    ("cuda", 1, 2, 2, 1),
    ("cuda", 3, 4, 1, 0),  # srun --gpus-per-task=1: each rank sees only its own GPU
    ("cuda:1", 0, 8, 2, 1),
    ("CUDA:0", 0, 1, 1, 0),
])
def test_gpu_index(spec, local_rank, local_size, n_gpus, expected):
    assert devices.gpu_index(spec, local_rank, local_size, n_gpus) == expected


@pytest.mark.parametrize("spec, local_rank, local_size, n_gpus, message", [
    ("cuda", 0, 1, 0, "no CUDA device is visible"),
    ("cuda:0", 0, 1, 0, "no CUDA device is visible"),
    ("cuda:2", 0, 1, 2, "only 2 CUDA device(s)"),
    ("auto", 0, 4, 2, "4 ranks on this node but 2 GPUs"),  # never share GPUs silently
    ("cuda", 2, 3, 2, "3 ranks on this node but 2 GPUs"),
    ("gpu", 0, 1, 1, "--device must be auto, cpu, cuda or cuda:N"),
    ("cuda:x", 0, 1, 1, "--device must be"),
])
def test_gpu_index_refuses(spec, local_rank, local_size, n_gpus, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices.gpu_index(spec, local_rank, local_size, n_gpus)


def test_visible_devices_are_named_in_the_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES="):
        devices.gpu_index("cuda", 0, 1, 0)


def test_select_device_on_this_machine():
    assert devices.select_device("auto") == torch.device("cpu") or torch.cuda.is_available()
    assert devices.select_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_backmap_device_cuda_without_gpu_is_one_line_error(run_cli, tmp_path):
    out = tmp_path / "out.h5"
    code, _, err = run_cli("backmap", REPO / "examples" / "example.cg.h5", "-o", out, "--device", "cuda",
                           "--no-progress")
    assert_one_line_error(code, err, "--device cuda: no CUDA device is visible")
    assert not out.exists() and not os.path.exists(str(out) + ".d")


def test_backmap_summary_records_device_and_kernels(run_cli, tmp_path):
    out = tmp_path / "out.h5"
    code, stdout, err = run_cli("backmap", REPO / "examples" / "example.cg.h5", "-o", out, "--device", "cpu",
                                "--model", "ideal", "--no-progress")
    assert code == 0, err
    assert "(cpu; cpu kernels, " in stdout
    import json

    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["devices"] == ["cpu"] and summary["kernels"] == ["cpu"]
    assert summary["per_rank"][0]["device"] == "cpu" and summary["per_rank"][0]["kernels"] == "cpu"
    with h5py.File(out) as f:
        assert f["coordinates"].shape[0] == 40


def test_cuda_tensors_dispatch_to_triton():
    """The dispatch picks the Triton kernels for CUDA tensors whenever triton imports (as in `make test`)."""
    assert ops.backend("cuda") == "triton"
    assert ops.backend("cpu") == "cpu"


# ----------------------------------------------------------------------------------------------------------
# the shim's indexing is Python's indexing


@pytest.mark.parametrize("idx", [
    (slice(1, 3),), (None, Ellipsis, 2), ("t", slice(None), 1), (Ellipsis, "t"), (slice(None), "t", None),
    (1, "t"), (slice(0, 4, 2), 3), (-1,), (Ellipsis, slice(None, -1), None),
])
def test_aten_indexing_matches_python_indexing(idx):
    x = torch.randn(4, 5, 6)
    t = torch.tensor([0, 2, 1])
    idx = tuple(t if i == "t" else i for i in idx)
    expected = x[idx]
    with AtenIndexing():
        got = x[idx]
    assert torch.equal(got, expected)
    y, z = x.clone(), x.clone()
    y[idx] = 7.0
    with AtenIndexing():
        z[idx] = 7.0
    assert torch.equal(y, z)


# ----------------------------------------------------------------------------------------------------------
# fake CUDA


@pytest.fixture
def example():
    from ldb_hpc.io.cg import CGTrajectory

    with CGTrajectory(str(REPO / "examples" / "example.cg.h5")) as cg:
        return cg.residues, torch.from_numpy(cg.read(0, 2).ca)


def _covered_path(model, residues, ca_real):
    """The device-agnostic inference path on fake CUDA: returns the device of every result."""
    from ldb_hpc.geometry import builder, frames, peptide
    from ldb_hpc.model import diffusion as diff
    from ldb_hpc.model.ideal import load_tables, peptide_template, trace_angles
    from ldb_hpc.model.rotamers import staggered_chi1
    from ldb_hpc.ops.noise import latent_noise

    dev = torch.device("cuda", 0)
    out = {}
    fake_cuda_module(model)
    B, L = ca_real.shape[:2]
    ca = torch.randn(B, L, 3, device=dev)
    restype = torch.as_tensor(residues.restype).to(dev)  # a host array moved explicitly: allowed
    segment = torch.as_tensor(residues.segment).to(dev)
    frames_idx = torch.arange(B, device=dev)
    # featurizer + conditioning encoder, denoiser, DDIM (with and without noise), VQ snap, decoders
    g, h = model.condition(ca, restype, segment)
    cond = model.denoiser.prepare(h, g.nbr)
    for temperature, eta in ((0.0, 0.0), (0.5, 0.0), (1.0, 0.5)):
        x = diff.sample(model.schedule, model.denoiser, cond, (B, 2, L, model.cfg.latent_dim), frames_idx, 3,
                        3, temperature, eta, torch.float32)
        out[f"ddim T={temperature} eta={eta}"] = x.device
    z = x * model.latent_std + model.latent_mean
    zq = model.vq.decode(model.vq.nearest(z))
    dec = model._decode_sampled(g, h, zq.reshape(B * 2, L, -1), 2)
    out.update({f"decoder {k}": v.device for k, v in dec.items()})
    out["noise"] = latent_noise(5, frames_idx, 2, 1, L, 4).device
    # the builder: link geometry, tabulated angles, units (trans and cis), chain ends, Z-matrix atoms
    links = peptide.link_geometry(ca, segment)
    out["links"] = links.R.device
    tables = {k: v.to(dev) for k, v in load_tables().items()}
    alpha, psi, phi = trace_angles(links, tables, ca.dtype)
    out["trace angles"] = alpha.device
    U = peptide.unit_frame(links.R, alpha)
    out["alpha_of"] = peptide.alpha_of(links.R, ca[:, :-1], ca[:, :-1] + U[..., 0], ca[:, 1:]).device
    out["template"] = peptide_template(tables).trans_unit.device  # (cis_units reads a template value: host sync)
    n, c, o = peptide.singleton_backbone(ca)
    out["singletons"] = o.device
    out["phi/psi"] = peptide.backbone_phi_psi(ca, n, c, segment)[0].device
    R, t = frames.frames_from_backbone(n, ca, c)
    tors = torch.zeros(B, L, 5, device=dev)
    out["build_atoms"] = builder.build_atoms(R, t, tors, restype).device
    out["staggered chi1"] = staggered_chi1(torch.randn(B, L, 4, device=dev), restype).device
    out["ca frames"] = frames.ca_trace_frames(ca, segment)[0].device
    out["nerf"] = builder.nerf(n, ca, c, 1.5, 2.0, psi[..., :1]).device
    return out


def test_inference_path_runs_on_fake_cuda(example, monkeypatch):
    from ldb_hpc.model.backmappers import load_backmapper

    residues, ca = example
    model = load_backmapper(None).model
    monkeypatch.setenv(ops.ENV_VAR, "reference")  # fake tensors cannot launch Triton kernels
    with FakeTensorMode(allow_non_fake_inputs=True), AtenIndexing():
        result = _covered_path(model, residues, ca)
    assert len(result) > 15 and all(d == torch.device("cuda", 0) for d in result.values()), result


@pytest.mark.parametrize("factory", ["arange", "zeros", "full"])
def test_fake_cuda_catches_a_tensor_made_on_the_cpu(example, monkeypatch, factory):
    """The same run with one factory made to ignore its device (as if a call had forgotten it) fails."""
    from ldb_hpc.model.backmappers import load_backmapper

    residues, ca = example
    model = load_backmapper(None).model
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    real = getattr(torch, factory)

    def forgetful(*args, **kwargs):
        kwargs.pop("device", None)
        return real(*args, **kwargs)

    with FakeTensorMode(allow_non_fake_inputs=True), AtenIndexing():
        monkeypatch.setattr(torch, factory, forgetful)
        with pytest.raises((FakeTensorDeviceMismatchError, RuntimeError)) as info:
            _covered_path(model, residues, ca)
    assert "cpu" in str(info.value).lower() and "cuda" in str(info.value).lower(), info.value


# ----------------------------------------------------------------------------------------------------------
# data-dependent parts: every factory call passes a device

FACTORIES = {"zeros", "ones", "full", "empty", "arange", "tensor", "as_tensor", "randn", "rand", "randint",
             "linspace", "eye", "from_numpy"}
# Host tables built once and moved with .to(device) where they are used.
HOST_TABLES = {("ldb_hpc/model/packing.py", "_grid"), ("ldb_hpc/model/rescue_tables.py", "self_pairs")}
DATA_DEPENDENT = ["ldb_hpc/geometry/peptide.py", "ldb_hpc/geometry/peptide_cis.py", "ldb_hpc/geometry/atoms.py",
                  "ldb_hpc/model/packing.py", "ldb_hpc/model/rescue.py", "ldb_hpc/model/rescue_tables.py",
                  "ldb_hpc/model/rotamers.py", "ldb_hpc/ops/reference.py", "ldb_hpc/ops/__init__.py",
                  "ldb_hpc/ops/backends.py"]


def _factories_without_device(path: str) -> list[str]:
    tree = ast.parse((REPO / path).read_text())
    bad = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or (path, fn.name) in HOST_TABLES:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch" \
                    and not any(k.arg == "device" for k in node.keywords):
                bad.append(f"{path}:{node.lineno} torch.{node.func.attr} in {fn.name}()")
    return bad


def test_data_dependent_parts_create_tensors_on_the_inputs_device():
    bad = [hit for path in DATA_DEPENDENT for hit in _factories_without_device(path)]
    assert not bad, "\n".join(bad)


def test_the_factory_check_catches_one(tmp_path, monkeypatch):
    probe = REPO / "ldb_hpc" / "model" / "packing.py"
    source = probe.read_text() + "\n\ndef _probe(x):\n    return torch.zeros(3) + x\n"
    fake_repo = tmp_path / "ldb_hpc" / "model"
    fake_repo.mkdir(parents=True)
    (fake_repo / "packing.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    hits = _factories_without_device("ldb_hpc/model/packing.py")
    assert hits == [f"ldb_hpc/model/packing.py:{len(source.splitlines())} torch.zeros in _probe()"], hits


def test_host_tables_are_moved_where_used():
    """The exempted host tables reach the computation only through resident.on_device (uploaded once per
    device, ldb_hpc.geometry.resident)."""
    packing = (REPO / "ldb_hpc/model/packing.py").read_text()
    rescue = (REPO / "ldb_hpc/model/rescue_tables.py").read_text()
    rotamers = (REPO / "ldb_hpc/model/rotamers.py").read_text()
    assert "on_device(deltas, dev, pos.dtype)" in packing
    assert "on_device(self_pairs(), atoms.device)" in rescue
    assert "on_device(_HALF_WIDTH, restype.device, chi.dtype)[restype]" in rotamers
    assert np.all([name in packing + rescue + rotamers for _, name in HOST_TABLES])


def test_model_tables_follow_the_model():
    """The peptide tables live with the weights: .to(device) moves them, so no batch copies them to the device."""
    from ldb_hpc.model.backmappers import load_backmapper

    model = load_backmapper(None).model
    assert all(v.device.type == "cpu" for v in model.tables.values())
    model.to("meta")
    assert all(v.device.type == "meta" for v in model.tables.values())
    assert model.latent_mean.device.type == "meta"


def test_a_table_first_built_under_fake_mode_is_not_cached():
    """Tables cached per process (ldb_hpc.geometry.resident.table_cache: the ideal model's tables, the rescue's
    grids): one first built inside a device test's FakeTensorMode is returned uncached, so a later real run gets
    real tensors (a cached fake table made the next CPU backmap of the same pytest worker fail in nonzero)."""
    from ldb_hpc.geometry.resident import table_cache

    built = []

    @table_cache(maxsize=2)
    def table(n):
        built.append(n)
        return {"t": torch.arange(n)}, torch.ones(n)

    with FakeTensorMode():
        fake = table(3)
    assert type(fake[1]) is not torch.Tensor
    real = table(3)
    assert type(real[0]["t"]) is torch.Tensor and type(real[1]) is torch.Tensor and built == [3, 3]
    assert table(3) is real and built == [3, 3]  # real results are cached
