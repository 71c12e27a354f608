"""Trajectory IO: topology JSON, CG reader (HDF5 + mdtraj formats), all-atom writer, mdtraj bridge."""

from __future__ import annotations

import json
import os
import warnings

import h5py
import mdtraj as md
import numpy as np
import pytest

from ldb_hpc.chem.protein import Residues
from ldb_hpc.chem.residues import ATOM14, BONDS, RESTYPE_INDEX, RESTYPES_3, SLOT_INDEX
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.aa import AllAtomWriter, read_aa
from ldb_hpc.io.cg import CGTrajectory, CGWriter
from ldb_hpc.io.mdtraj_bridge import load_any, traj_to_atom14
from ldb_hpc.io.topology import aa_topology, cg_topology

# ------------------------------------------------------------------------------------------------
# helpers (also used by test_coarsen.py)


def ca_trace(n: int, rng, step: float = 3.8) -> np.ndarray:
    """[n, 3] Å: a random walk with fixed CA–CA distance and no sharp reversals."""
    x = np.zeros((n, 3))
    d = np.array([1.0, 0.0, 0.0])
    for i in range(1, n):
        d = d + 0.6 * rng.normal(size=3)
        d /= np.linalg.norm(d)
        x[i] = x[i - 1] + step * d
    return x


def make_residues(names, chains, resseq=None, segment=None) -> Residues:
    n = len(names)
    restype = [RESTYPE_INDEX.get(x, 20) for x in names]
    resseq = np.arange(1, n + 1) if resseq is None else resseq
    if segment is None:
        ch = np.asarray(chains, dtype=object)
        segment = np.cumsum(np.r_[True, ch[1:] != ch[:-1]]) - 1
    return Residues(restype, names, chains, resseq, [""] * n, segment)


def pdb_line(serial, name, resname, chain, resseq, xyz, element, het=False) -> str:
    field = name if len(name) == 4 else f" {name:<3}"
    rec = "HETATM" if het else "ATOM  "
    return (f"{rec}{serial:5d} {field} {resname:>3} {chain}{resseq:4d}    "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00          {element:>2}")


def write_pdb(path, residues_spec, n_models=1, seed=0, cryst=None):
    """Write a multi-model PDB. residues_spec: [(chain, resseq, resname, [(atom, element)], het)].

    Returns {(chain, resseq, atom): [n_models, 3] Å} of every atom written.
    """
    rng = np.random.default_rng(seed)
    chains = {}
    for spec in residues_spec:
        chains.setdefault(spec[0], []).append(spec)
    base = {}
    offset = 0.0
    for chain, specs in chains.items():
        trace = ca_trace(len(specs), rng) + np.array([0.0, offset, 0.0])
        offset += 40.0
        for k, (c, seq, resname, atoms, het) in enumerate(specs):
            for a, (atom, el) in enumerate(atoms):
                pos = trace[k].copy()
                if atom != "CA":
                    v = rng.normal(size=3)
                    pos += 1.5 * v / np.linalg.norm(v)
                base[(c, seq, atom)] = pos
    coords = {key: np.stack([p + 0.3 * rng.normal(size=3) * (m > 0) for m in range(n_models)])
              for key, p in base.items()}
    lines = []
    if cryst:
        lines.append(f"CRYST1{cryst[0]:9.3f}{cryst[1]:9.3f}{cryst[2]:9.3f}  90.00  90.00  90.00 P 1           1")
    for m in range(n_models):
        lines.append(f"MODEL     {m + 1:4d}")
        serial = 1
        prev_chain = None
        for c, seq, resname, atoms, het in residues_spec:
            if prev_chain is not None and c != prev_chain:
                lines.append("TER")
            prev_chain = c
            for atom, el in atoms:
                lines.append(pdb_line(serial, atom, resname, c, seq, coords[(c, seq, atom)][m], el, het))
                serial += 1
        lines.append("TER")
        lines.append("ENDMDL")
    lines.append("END")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return coords


def heavy(resname):
    """[(atom, element)] of a standard residue's heavy atoms."""
    return [(a, a[0]) for a in ATOM14[resname]]


def sample_spec():
    """Two chains, force-field names, hydrogens, OT1/OT2, MSE, water and a calcium ion."""
    ile = [(a if a != "CD1" else "CD", a[0]) for a in ATOM14["ILE"]]
    mse = [(a if a != "SD" else "SE", "SE" if a == "SD" else a[0]) for a in ATOM14["MET"]]
    gly_c = [("N", "N"), ("CA", "C"), ("C", "C"), ("OT1", "O"), ("OT2", "O")]
    spec = [
        ("A", 1, "ALA", heavy("ALA") + [("H", "H"), ("HA", "H")], False),
        ("A", 2, "HSD", heavy("HIS"), False),
        ("A", 3, "ILE", ile, False),
        ("A", 4, "MSE", mse, True),
        ("A", 5, "CYX", heavy("CYS"), False),
        ("A", 6, "GLY", gly_c, False),
        ("B", 10, "TRP", heavy("TRP"), False),
        ("B", 11, "LYS", heavy("LYS") + [("OXT", "O")], False),
        ("B", 12, "CA", [("CA", "CA")], True),
        ("B", 13, "HOH", [("O", "O")], True),
    ]
    return spec


def write_cg(path, n_frames=100, n_res=12, seed=0, cell=False, names=None):
    rng = np.random.default_rng(seed)
    names = names or [RESTYPES_3[i % 20] for i in range(n_res)]
    chains = ["A"] * (n_res // 2) + ["B"] * (n_res - n_res // 2)
    res = make_residues(names, chains, resseq=np.arange(n_res) + 5)
    ca = np.stack([ca_trace(n_res, rng) for _ in range(n_frames)]).astype(np.float32)
    time = np.arange(n_frames) * 2.5
    with CGWriter(path, res, has_cell=cell) as w:
        for a in range(0, n_frames, 33):  # several appends
            b = min(a + 33, n_frames)
            cl = np.full((b - a, 3), 50.0) if cell else None
            an = np.full((b - a, 3), np.pi / 2) if cell else None
            w.append(ca[a:b], time[a:b], cl, an)
    return res, ca, time


# ------------------------------------------------------------------------------------------------
# topology


def test_aa_topology_atoms_bonds_and_index():
    res = make_residues(["ALA", "GLY", "HIS", "TRP", "PRO", "UNK", "CYS"], list("AAABBBB"),
                        segment=[0, 0, 1, 2, 2, 2, 3])
    topo, atom_index, n_atoms = aa_topology(res)
    names = [a["name"] for c in topo["chains"] for r in c["residues"] for a in r["atoms"]]
    expected = [a for r in res.standard_names for a in ATOM14[r]]
    assert names == expected and n_atoms == len(expected)
    assert [c["chain_id"] for c in topo["chains"]] == ["A", "B"]
    # atom_index maps slot → flat index; -1 exactly where the slot does not exist.
    assert ((atom_index >= 0) == res.atom_mask()).all()
    for i, r in enumerate(res.standard_names):
        for s, a in enumerate(ATOM14[r]):
            assert names[atom_index[i, s]] == a
    bonds = np.asarray(topo["bonds"])
    n_intra = sum(len(BONDS[r]) for r in res.standard_names)
    links = res.peptide_links()
    assert len(bonds) == n_intra + links.sum() == n_intra + 3
    # Peptide bonds: C(i)–N(i+1) only within a segment.
    peptide = bonds[n_intra:]
    assert (peptide[:, 0] == atom_index[np.nonzero(links)[0], 2]).all()
    assert (peptide[:, 1] == atom_index[np.nonzero(links)[0] + 1, 0]).all()
    assert not any(atom_index[1, 2] == b[0] and atom_index[2, 0] == b[1] for b in bonds)  # 1|2 is a break


def test_cg_topology_one_ca_per_residue():
    res = make_residues(["ALA", "GLY", "HIS"], list("AAB"))
    topo = cg_topology(res)
    atoms = [(r["name"], r["resSeq"], a["name"], a["index"]) for c in topo["chains"] for r in c["residues"]
             for a in r["atoms"]]
    assert atoms == [("ALA", 1, "CA", 0), ("GLY", 2, "CA", 1), ("HIS", 3, "CA", 2)]
    assert topo["bonds"] == [[0, 1]]  # virtual bond only inside the segment of chain A


# ------------------------------------------------------------------------------------------------
# CG reader


def test_cg_reader_ranges_equal_mdtraj_and_read_only_the_range(tmp_path, monkeypatch):
    path = str(tmp_path / "cg.h5")
    res, ca, time = write_cg(path, n_frames=100, cell=True)
    ref = md.load(path)
    assert ref.n_frames == 100 and ref.n_atoms == 12
    requested = []
    orig = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name == "/coordinates":
            requested.append(key)
        return orig(self, key)

    with CGTrajectory(path) as cg:
        assert len(cg) == cg.n_frames == 100 and cg.n_residues == 12 and cg.has_cell
        assert list(cg.residues.chain_id) == list(res.chain_id)
        assert (cg.residues.resseq == res.resseq).all() and (cg.residues.restype == res.restype).all()
        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
        fr = cg.read(37, 61)
        monkeypatch.setattr(h5py.Dataset, "__getitem__", orig)
        assert fr.start == 37 and len(fr) == 24 and fr.ca.shape == (24, 12, 3) and fr.ca.dtype == np.float32
        np.testing.assert_allclose(fr.ca, ref.xyz[37:61] * 10, atol=1e-5)
        np.testing.assert_allclose(fr.ca, ca[37:61], atol=1e-4)
        np.testing.assert_allclose(fr.time, ref.time[37:61])
        np.testing.assert_allclose(fr.cell_lengths, ref.unitcell_lengths[37:61] * 10, rtol=1e-6)
        np.testing.assert_allclose(np.rad2deg(fr.cell_angles), ref.unitcell_angles[37:61], rtol=1e-6)
        chunks = list(cg.iter_chunks(30))
        assert [c.start for c in chunks] == [0, 30, 60, 90]
        np.testing.assert_allclose(np.concatenate([c.ca for c in chunks]), ref.xyz * 10, atol=1e-5)
    # Only the requested frame range was read from /coordinates.
    assert requested == [slice(37, 61)]


def test_cg_reader_mdtraj_formats(tmp_path):
    rng = np.random.default_rng(1)
    spec = [("A", i + 1, r, heavy(r), False) for i, r in enumerate(["ALA", "GLY", "SER", "LEU", "VAL"])]
    spec += [("A", 6, "HOH", [("O", "O")], True)]
    pdb = str(tmp_path / "aa.pdb")
    write_pdb(pdb, spec)
    top = md.load(pdb)
    xyz = top.xyz + 0.05 * rng.normal(size=(23, top.n_atoms, 3)).astype(np.float32)
    traj = md.Trajectory(xyz, top.topology, time=np.arange(23) * 4.0,
                         unitcell_lengths=np.full((23, 3), 5.0), unitcell_angles=np.full((23, 3), 90.0))
    ca_idx = top.topology.select("name CA")
    for ext in ("xtc", "dcd"):
        path = str(tmp_path / f"traj.{ext}")
        traj.save(path)
        with pytest.raises(InputError, match="--top"):
            CGTrajectory(path)
        with CGTrajectory(path, top=pdb) as cg:
            assert cg.n_frames == 23 and cg.n_residues == 5 and cg.has_cell  # water skipped
            assert list(cg.residues.standard_names) == ["ALA", "GLY", "SER", "LEU", "VAL"]
            fr = cg.read(7, 19)
            np.testing.assert_allclose(fr.ca, xyz[7:19][:, ca_idx] * 10, atol=2e-2)  # xtc precision 1e-3 nm
            np.testing.assert_allclose(fr.cell_lengths, 50.0, rtol=1e-5)
            np.testing.assert_allclose(fr.cell_angles, np.pi / 2, rtol=1e-5)
            if ext == "xtc":
                np.testing.assert_allclose(fr.time, np.arange(7, 19) * 4.0)
            chunks = list(cg.iter_chunks(10, start=3))
            assert [(c.start, len(c)) for c in chunks] == [(3, 10), (13, 10)]
            np.testing.assert_allclose(chunks[1].ca, xyz[13:23][:, ca_idx] * 10, atol=2e-2)
    # A CA-only multi-model PDB is read whole.
    ca_pdb = str(tmp_path / "ca.pdb")
    coords = write_pdb(ca_pdb, [("A", i, "ALA", [("CA", "C")], False) for i in range(1, 5)], n_models=3)
    with CGTrajectory(ca_pdb) as cg:
        assert cg.n_frames == 3
        np.testing.assert_allclose(cg.read(1, 3).ca[:, 2], coords[("A", 3, "CA")][1:3], atol=2e-3)


def _h5(path, coords=None, topology=None, time=None):
    with h5py.File(path, "w") as f:
        if coords is not None:
            f["coordinates"] = coords
        if topology is not None:
            data = json.dumps(topology).encode()
            f["topology"] = np.array([data])
        if time is not None:
            f["time"] = time


def test_cg_reader_bad_inputs(tmp_path):
    good = str(tmp_path / "good.h5")
    res, ca, _ = write_cg(good, n_frames=100, n_res=6)
    topo = cg_topology(res)

    def expect(path, pattern, **kw):
        with pytest.raises(InputError, match=pattern):
            CGTrajectory(str(path), **kw)

    expect(tmp_path / "missing.h5", "not found")
    (tmp_path / "text.h5").write_text("this is not HDF5\n")
    expect(tmp_path / "text.h5", "not an HDF5 file")
    data = open(good, "rb").read()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) * 2 // 3])
    expect(tmp_path / "trunc.h5", "corrupt or truncated")
    _h5(tmp_path / "nocoord.h5", topology=topo)
    expect(tmp_path / "nocoord.h5", "no /coordinates")
    _h5(tmp_path / "shape2d.h5", coords=np.zeros((4, 6), "f4"), topology=topo)
    expect(tmp_path / "shape2d.h5", r"shape \(4, 6\)")
    _h5(tmp_path / "natoms.h5", coords=np.zeros((4, 5, 3), "f4"), topology=topo)
    expect(tmp_path / "natoms.h5", "5 atoms per frame but /topology has 6")
    _h5(tmp_path / "zero.h5", coords=np.zeros((0, 6, 3), "f4"), topology=topo)
    expect(tmp_path / "zero.h5", "zero frames")
    bad = ca / 10
    bad[0, 2, 1] = np.nan
    _h5(tmp_path / "nan0.h5", coords=bad, topology=topo)
    expect(tmp_path / "nan0.h5", "frame 0 has non-finite")
    bad = ca / 10
    bad[57, 3, 0] = np.inf
    _h5(tmp_path / "inf.h5", coords=bad, topology=topo)
    with CGTrajectory(str(tmp_path / "inf.h5")) as cg:  # validated per chunk, not scanned at open
        cg.read(0, 50)
        with pytest.raises(InputError, match="frame 57 has non-finite"):
            cg.read(50, 100)
    bad = ca / 10
    bad[42, 0, 0] = 5e3  # nm → 5e4 Å
    _h5(tmp_path / "absurd.h5", coords=bad, topology=topo)
    with CGTrajectory(str(tmp_path / "absurd.h5")) as cg:
        with pytest.raises(InputError, match="frame 42 has absurd"):
            list(cg.iter_chunks(20))
    # An all-atom topology is not a CG topology.
    aa = str(tmp_path / "aa.h5")
    with AllAtomWriter(aa, res, n_frames=1) as w:
        w.write(0, np.zeros((1, 1, 6, 14, 3)), np.zeros(1))
    expect(aa, "one CA atom per residue; residue ALA A:5 has 5 atoms")
    # Unknown residue names: error with the --map-residue hint; mapping or keep_unknown fixes it.
    topo_x = json.loads(json.dumps(topo))
    topo_x["chains"][0]["residues"][1]["name"] = "LRT"
    _h5(tmp_path / "unk.h5", coords=ca / 10, topology=topo_x)
    expect(tmp_path / "unk.h5", r"LRT .*--map-residue")
    with CGTrajectory(str(tmp_path / "unk.h5"), residue_map={"LRT": "LYS"}) as cg:
        assert cg.residues.standard_names[1] == "LYS" and cg.residues.resname[1] == "LRT"
    with CGTrajectory(str(tmp_path / "unk.h5"), keep_unknown=True) as cg:
        assert cg.residues.standard_names[1] == "UNK"


# ------------------------------------------------------------------------------------------------
# all-atom writer


def _aa_inputs(rng, F=4, S=3):
    res = make_residues(["MET", "ALA", "GLY", "TYR", "PRO", "SER", "HIS"], list("AAAABBB"),
                        resseq=[3, 4, 5, 6, 20, 21, 22], segment=[0, 0, 1, 1, 2, 2, 2])
    pos = (rng.normal(size=(F, S, len(res), 14, 3)) * 8).astype(np.float32)
    time = np.arange(F) * 12.5 + 100
    return res, pos, time


def test_aa_writer_mdtraj_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    F, S = 4, 3
    res, pos, time = _aa_inputs(rng, F, S)
    path = str(tmp_path / "out.aa.h5")
    cl = np.stack([np.full(3, 60.0 + f) for f in range(F)])
    ang = np.full((F, 3), np.deg2rad(90.0))
    prov = {"model": "ideal", "model_hash": "abc123", "seed": 7, "steps": 4, "samples": S, "input": "x.cg.h5"}
    with AllAtomWriter(path, res, n_frames=F, samples=S, provenance=prov, has_cell=True) as w:
        w.write(2, pos[2:], time[2:], cl[2:], ang[2:])  # any order, any chunking
        w.write(0, pos[:2], time[:2], cl[:2], ang[:2])
    t = md.load(path)
    mask = res.atom_mask()
    n_atoms = int(mask.sum())
    assert t.n_frames == F * S and t.n_atoms == n_atoms
    assert [r.name for r in t.topology.residues] == res.standard_names
    assert [r.resSeq for r in t.topology.residues] == list(res.resseq)
    assert [c.chain_id for c in t.topology.chains] == ["A", "B"]
    assert [a.name for a in t.topology.atoms] == [a for r in res.standard_names for a in ATOM14[r]]
    n_bonds = sum(len(BONDS[r]) for r in res.standard_names) + int(res.peptide_links().sum())
    assert t.topology.n_bonds == n_bonds
    # Frame-major rows: frame f, sample s → row f·S + s; coordinates in nm.
    for f in range(F):
        for s in range(S):
            np.testing.assert_allclose(t.xyz[f * S + s], pos[f, s][mask] / 10, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t.time, np.repeat(time, S))
    np.testing.assert_allclose(t.unitcell_lengths, np.repeat(cl, S, axis=0) / 10, rtol=1e-6)
    np.testing.assert_allclose(t.unitcell_angles, 90.0, rtol=1e-6)
    with h5py.File(path, "r") as fh:
        assert fh["coordinates"].attrs["units"] == "nanometers"
        assert fh["time"].attrs["units"] == "picoseconds"
        assert fh.attrs["conventions"] == "Pande" and fh.attrs["program"] == "ldb-hpc"
        assert fh["coordinates"].chunks[0] % S == 0  # chunks are whole frames
        assert (fh["ldb/cg_frame"][:] == np.repeat(np.arange(F), S)).all()
        assert (fh["ldb/sample"][:] == np.tile(np.arange(S), F)).all()
        assert fh["ldb"].attrs["model_hash"] == "abc123" and fh["ldb"].attrs["seed"] == 7
        assert fh["ldb"].attrs["input"] == "x.cg.h5" and "ldb_hpc_version" in fh["ldb"].attrs
    r2, p2, m2, cg_frame, sample = read_aa(path)
    assert (m2 == mask).all() and (r2.restype == res.restype).all() and (r2.segment == res.segment).all()
    assert list(r2.chain_id) == list(res.chain_id) and (r2.resseq == res.resseq).all()
    np.testing.assert_allclose(p2.reshape(F, S, len(res), 14, 3)[..., mask, :], pos[..., mask, :], atol=1e-5)
    assert (cg_frame == np.repeat(np.arange(F), S)).all() and (sample == np.tile(np.arange(S), F)).all()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp file left


def test_aa_writer_incomplete_or_failed_leaves_no_final_file(tmp_path):
    rng = np.random.default_rng(3)
    res, pos, time = _aa_inputs(rng, 4, 2)
    path = tmp_path / "out.h5"
    w = AllAtomWriter(str(path), res, n_frames=4, samples=2)
    w.write(0, pos[:3], time[:3])
    with pytest.raises(InputError, match="1 of 4 frames missing"):
        w.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        with AllAtomWriter(str(path), res, n_frames=4, samples=2) as w:
            w.write(0, pos, time)
            raise RuntimeError("crash before close")
    assert os.listdir(tmp_path) == []
    # An existing output is refused without overwrite and left untouched.
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        AllAtomWriter(str(path), res, n_frames=4, samples=2)
    assert path.read_bytes() == b"keep me"
    with AllAtomWriter(str(path), res, n_frames=4, samples=2, overwrite=True) as w:
        w.write(0, pos, time)
    assert md.load(str(path)).n_frames == 8


# ------------------------------------------------------------------------------------------------
# mdtraj bridge


def test_traj_to_atom14_names_chains_and_skips(tmp_path):
    pdb = str(tmp_path / "x.pdb")
    coords = write_pdb(pdb, sample_spec(), n_models=2)
    traj = load_any(pdb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every heavy atom has a slot: no "ignored atoms" warning
        res, pos, mask = traj_to_atom14(traj)
    assert res.standard_names == ["ALA", "HIS", "ILE", "MET", "CYS", "GLY", "TRP", "LYS"]
    assert list(res.chain_id) == list("AAAAAABB") and list(res.resseq) == [1, 2, 3, 4, 5, 6, 10, 11]
    assert pos.shape == (2, 8, 14, 3) and pos.dtype == np.float32
    assert (mask == res.atom_mask()).all()  # every heavy atom found, hydrogens/OXT/water/ion ignored
    ile_cd1 = SLOT_INDEX[("ILE", "CD1")]
    met_sd = SLOT_INDEX[("MET", "SD")]
    np.testing.assert_allclose(pos[:, 2, ile_cd1], coords[("A", 3, "CD")], atol=2e-3)
    np.testing.assert_allclose(pos[:, 3, met_sd], coords[("A", 4, "SE")], atol=2e-3)
    np.testing.assert_allclose(pos[:, 5, 3], coords[("A", 6, "OT1")], atol=2e-3)
    np.testing.assert_allclose(pos[:, 7, 1], coords[("B", 11, "CA")], atol=2e-3)
    assert res.segment[5] != res.segment[6]  # new chain → new segment


def test_traj_to_atom14_unknown_residue(tmp_path):
    spec = [("A", 1, "ALA", heavy("ALA"), False),
            ("A", 2, "LRT", [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"), ("CB", "C"), ("XZ", "C")], True),
            ("A", 3, "GLY", heavy("GLY"), False)]
    pdb = str(tmp_path / "u.pdb")
    write_pdb(pdb, spec)
    traj = load_any(pdb)
    with pytest.raises(InputError, match=r"LRT \(1 residue, first A:2\).*--map-residue"):
        traj_to_atom14(traj)
    with pytest.warns(UserWarning, match="A:2 LRT XZ"):
        res, pos, mask = traj_to_atom14(traj, residue_map={"LRT": "LYS"})
    assert res.standard_names == ["ALA", "LYS", "GLY"] and mask[1].sum() == 5  # N CA C O CB
    with pytest.warns(UserWarning):
        res, pos, mask = traj_to_atom14(traj, keep_unknown=True)
    assert res.standard_names[1] == "UNK" and mask[1].sum() == 4


def test_load_any_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_any(str(tmp_path / "nope.pdb"))
    (tmp_path / "t.xtc").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="--top"):
        load_any(str(tmp_path / "t.xtc"))
    (tmp_path / "bad.dcd").write_bytes(b"garbage" * 10)
    pdb = str(tmp_path / "p.pdb")
    write_pdb(pdb, [("A", 1, "ALA", heavy("ALA"), False)])
    with pytest.raises(InputError, match="cannot read"):
        load_any(str(tmp_path / "bad.dcd"), top=pdb)
