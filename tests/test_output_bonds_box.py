"""Every covalent bond and the periodic box reach every output (a user who backmaps to run MD next needs both).

Disulfides: ``Residues.disulfides`` become SG–SG bonds of the MDTraj-HDF5 topology, SSBOND + CONECT records of
every PDB file ldb_hpc.io.pdb writes (heavy atoms and ``--hydrogens`` layouts, one model or many) and of the
topology PDB beside xtc/dcd/trr; mdtraj and OpenMM read them back. The SG atoms of the synthetic rows here are far
apart, so a bond read back comes from the file's records, not from a reader's distance rule.

Box: a boxed CA trajectory (its cell changing per frame, as in NPT) backmapped to .pdb, .h5, .xtc, .dcd keeps its
cell (CRYST1, /cell_*, the formats' box), and an unboxed one writes none (no CRYST1, no /cell_*, no box).
"""

from __future__ import annotations

import io
import warnings

import mdtraj as md
import numpy as np
import pytest
from test_runtime import make_cg

from ldb_hpc.chem.hydrogens import Protonation, extra_mask
from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import RESTYPE_INDEX, SLOT_MASK
from ldb_hpc.engine.sinks import MemorySink, StreamSink, StructureFileSink
from ldb_hpc.io import pdb
from ldb_hpc.io import structure_files as sf
from ldb_hpc.io.aa import AllAtomWriter, read_aa
from ldb_hpc.io.export import export
from ldb_hpc.io.topology import aa_topology, output_topology

NAMES = ("MET", "CYS", "GLY", "ALA", "CYS", "TRP", "CYS")
OPTS = ("--model", "ideal", "--no-progress", "--batch-frames", "2")


def residues(pairs=((1, 4),)) -> Residues:
    n = len(NAMES)
    return Residues(restype=np.array([RESTYPE_INDEX[r] for r in NAMES]), resname=np.array(NAMES, dtype=object),
                    chain_id=np.array(["A"] * n, dtype=object), resseq=np.arange(10, 10 + n),
                    icode=np.array([""] * n, dtype=object), segment=np.zeros(n, dtype=np.int64), disulfides=pairs)


def rows(res: Residues, n: int, slots: int = 14, seed: int = 0) -> np.ndarray:
    """[n, L, slots, 3] Å: CAs on a zigzag 3.8 Å apart, the other atoms scattered around each CA."""
    rng = np.random.default_rng(seed)
    k = np.arange(len(res))
    ca = np.stack([k * 3.3, (k % 2) * 1.9, np.zeros(len(res))], axis=-1) + 20.0
    out = ca[None, :, None] + rng.normal(scale=1.5, size=(n, len(res), slots, 3))
    out[:, :, 1] = ca
    return out.astype(np.float32)


def sg_sg(topology) -> list[tuple]:
    """The SG–SG bonds of an mdtraj topology as sorted (resSeq, resSeq) pairs."""
    return sorted(tuple(sorted((a.residue.resSeq, b.residue.resSeq))) for a, b in topology.bonds
                  if a.name == b.name == "SG")


def load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.load(str(path), **kw)


# ---------------------------------------------------------------------------------------------------------------
# disulfides


def test_heavy_topology_has_the_disulfide_bond():
    res = residues()
    topo, atom_index, _ = aa_topology(res)
    sg = [atom_index[i, 5] for i in (1, 4)]  # CYS SG slot 5
    assert topo["bonds"][-1] == sg
    assert len(aa_topology(residues(()))[0]["bonds"]) == len(topo["bonds"]) - 1
    with pytest.raises(ValueError, match="not between two CYS"):
        aa_topology(residues(((0, 4),)))


def test_hydrogen_topology_disulfides_follow_the_protonation_and_must_agree():
    res = residues()
    topo = output_topology(res.with_disulfides(()), Protonation.from_pairs([(1, 4)]))[0]
    assert topo == output_topology(res, Protonation.from_pairs([(1, 4)]))[0]
    with pytest.raises(ValueError, match="differ from the protonation"):
        output_topology(res, Protonation.from_pairs([(4, 6)]))


def test_h5_outputs_carry_the_disulfide_and_read_back(tmp_path):
    res = residues()
    pos = rows(res, 2)[:, None]
    sf.write_rows(str(tmp_path / "a.h5"), "h5", res, pos)
    assert sg_sg(load(tmp_path / "a.h5").topology) == [(11, 14)]
    assert read_aa(str(tmp_path / "a.h5"))[0].disulfides == ((1, 4),)  # read back into the residues
    prot = Protonation.from_pairs(res.disulfides)
    slots = 14 + extra_mask(res.restype, res.segment, prot).shape[1]
    sf.write_rows(str(tmp_path / "h.h5"), "h5", res, rows(res, 1, slots)[:, None], protonation=prot)
    assert sg_sg(load(tmp_path / "h.h5").topology) == [(11, 14)]
    sink = MemorySink(res, 1, 1)
    sink.write(0, pos[:1])
    assert sg_sg(sink.trajectory(np.zeros(1)).topology) == [(11, 14)]


def test_pdb_ssbond_and_conect_columns():
    res = residues()
    one = rows(res, 1)
    text = pdb.pdb_text(res, one[:, None])
    lines = text.splitlines()
    d = np.linalg.norm(one[0, 1, 5].astype(np.float64) - one[0, 4, 5])
    ssbond = f"SSBOND   1 CYS A   11    CYS A   14                          1555   1555 {d:5.2f}"
    assert lines[0] == ssbond and ssbond[59:65] == "  1555" and ssbond[73:78] == f"{d:5.2f}"
    assert ssbond[11:14] == "CYS" and ssbond[15] == "A" and ssbond[17:21] == "  11" and ssbond[31:35] == "  14"
    serial = {(ln[17:20], int(ln[22:26]), ln[12:16].strip()): int(ln[6:11]) for ln in lines if ln.startswith("ATOM")}
    a, b = serial[("CYS", 11, "SG")], serial[("CYS", 14, "SG")]
    assert lines[-3:] == [f"CONECT{a:5d}{b:5d}", f"CONECT{b:5d}{a:5d}", "END"]
    # the cached layout and the direct text agree (pdb_text's two paths)
    mask = SLOT_MASK[res.restype]
    assert pdb.PDBLayout(res).text(one) == text == pdb.protein_to_pdb_string(Protein(res, one[0], mask))


def test_multi_model_pdb_conect_once_after_the_last_model(tmp_path):
    res = residues(((1, 4), (4, 6)))
    many = rows(res, 3)
    text = pdb.pdb_text(res, many[:, None])
    lines = text.splitlines()
    assert [ln[:6] for ln in lines[:2]] == ["SSBOND"] * 2 and text.count("SSBOND") == 2
    assert text.count("CONECT") == 4 and text.count("MODEL") == 3
    assert lines[-6] == "ENDMDL" and all(ln.startswith("CONECT") for ln in lines[-5:-1]) and lines[-1] == "END"
    path = tmp_path / "many.pdb"
    path.write_text(text)
    t = load(path)
    assert t.n_frames == 3 and sg_sg(t.topology) == [(11, 14), (14, 16)]


def test_single_model_pdb_read_back_by_mdtraj(tmp_path):
    res = residues()
    sf.write_rows(str(tmp_path / "one.pdb"), "pdb", res, rows(res, 1)[:, None])
    assert sg_sg(load(tmp_path / "one.pdb").topology) == [(11, 14)]
    no = residues(())
    sf.write_rows(str(tmp_path / "none.pdb"), "pdb", no, rows(no, 1)[:, None])
    text = (tmp_path / "none.pdb").read_text()
    assert "SSBOND" not in text and "CONECT" not in text and "CRYST1" not in text
    assert sg_sg(load(tmp_path / "none.pdb").topology) == []


def test_hydrogen_pdb_read_by_openmm_has_the_disulfide(tmp_path):
    from openmm.app import PDBFile

    res = residues()
    prot = Protonation.from_pairs(res.disulfides)
    mask = np.concatenate([SLOT_MASK[res.restype], extra_mask(res.restype, res.segment, prot)], axis=1)
    pos = rows(res, 2, mask.shape[1])
    text = pdb.PDBLayout(res, prot).text(pos)
    assert text.startswith("SSBOND   1 CYS A   11    CYS A   14") and text.count("CONECT") == 2
    assert pdb.PDBLayout(res.with_disulfides(()), prot).text(pos) == text
    assert pdb.hydrogen_pdb_string(res, pos[0], mask, prot.disulfides) == pdb.PDBLayout(res, prot).text(pos[:1])
    (tmp_path / "h.pdb").write_text(text)
    top = PDBFile(str(tmp_path / "h.pdb")).topology
    ss = [(a.residue.id, b.residue.id) for a, b in top.bonds() if a.name == b.name == "SG"]
    assert sorted(tuple(sorted(p)) for p in ss) == [("11", "14")]
    names = {a.name for a in top.atoms() if a.residue.id == "11"}
    assert "HG" not in names and "H" in names  # the bonded CYS has no thiol hydrogen
    assert sg_sg(load(tmp_path / "h.pdb").topology) == [(11, 14)]


def test_export_pdb_and_topology_pdb_carry_the_disulfide(tmp_path):
    res = residues()
    sf.write_rows(str(tmp_path / "a.h5"), "h5", res, rows(res, 3)[:, None])
    export(str(tmp_path / "a.h5"), str(tmp_path / "a.pdb"))
    text = (tmp_path / "a.pdb").read_text()
    assert text.startswith("SSBOND   1 CYS A   11    CYS A   14") and text.count("CONECT") == 2
    assert sg_sg(load(tmp_path / "a.pdb").topology) == [(11, 14)]
    for ext in ("xtc", "dcd", "trr"):
        export(str(tmp_path / "a.h5"), str(tmp_path / f"a.{ext}"))
        top = (tmp_path / "a.top.pdb").read_text()
        assert top.startswith("SSBOND") and top.count("CONECT") == 2 and "CRYST1" not in top
        t = load(tmp_path / f"a.{ext}", top=str(tmp_path / "a.top.pdb"))
        assert sg_sg(t.topology) == [(11, 14)] and t.n_frames == 3


# ---------------------------------------------------------------------------------------------------------------
# box


def cells(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame cells, changing as in NPT: lengths [n, 3] Å, angles [n, 3] degrees (one triclinic)."""
    lengths = np.array([61.0, 62.5, 64.0]) + np.arange(n)[:, None] * 0.25
    angles = np.tile([90.0, 90.0, 90.0], (n, 1))
    angles[-1] = (80.0, 85.0, 88.0)
    return lengths, angles


def boxed_cg(path, n_frames: int = 5, boxed: bool = True):
    """A CA trajectory (make_cg) with a cell per frame, written by mdtraj; returns (path, lengths Å, angles deg)."""
    t = load(make_cg(path.with_suffix(".tmp.h5"), n_frames=n_frames, n_res=12))
    lengths, angles = cells(n_frames)
    if boxed:
        t.unitcell_lengths, t.unitcell_angles = (lengths / 10.0).astype(np.float32), angles.astype(np.float32)
    else:
        t.unitcell_vectors = None
    t.save(str(path))
    return path, lengths, angles


def cryst1_lines(path) -> list[str]:
    return [ln for ln in open(path).read().splitlines() if ln.startswith("CRYST1")]


def test_cryst1_format():
    line = pdb.cryst1((61.0, 62.5, 1234.5678), (90.0, 85.125, 120.0))
    assert line == "CRYST1   61.000   62.500 1234.568  90.00  85.12 120.00 P 1           1"
    assert len(line) == 70 and line[55:66] == "P 1        " and line[66:70] == "   1"


@pytest.mark.parametrize("ext", ["pdb", "h5", "xtc", "dcd"])
def test_boxed_input_keeps_its_box_in_every_format(tmp_path, run_cli, ext):
    cg, lengths, angles = boxed_cg(tmp_path / "in.h5")
    out = tmp_path / f"out.{ext}"
    code, _, err = run_cli("backmap", cg, "-o", out, "--samples", "2", *OPTS)
    assert code == 0, err
    want_l, want_a = np.repeat(lengths, 2, axis=0) / 10.0, np.repeat(angles, 2, axis=0)
    if ext == "pdb":  # one CRYST1 where the cell changes (every frame here, not between a frame's samples)
        assert cryst1_lines(out) == [pdb.cryst1(a, b) for a, b in zip(lengths, angles)]
        text = out.read_text()
        assert text.index("CRYST1") < text.index("MODEL        1") and text.count("MODEL ") == 10
        return
    t = load(out) if ext == "h5" else load(out, top=str(tmp_path / "out.top.pdb"))
    assert t.n_frames == 10
    np.testing.assert_allclose(t.unitcell_lengths, want_l, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t.unitcell_angles, want_a, atol=1e-3 if ext == "dcd" else 1e-4)
    if ext != "h5":  # the topology PDB beside it: the first row's cell
        assert cryst1_lines(tmp_path / "out.top.pdb") == [pdb.cryst1(lengths[0], angles[0])]


def test_boxed_xtc_with_a_pdb_topology_keeps_its_box(tmp_path, run_cli):
    cg, lengths, angles = boxed_cg(tmp_path / "in.h5", n_frames=3)
    t = load(cg)
    t.save_xtc(str(tmp_path / "in.xtc"))
    t[0].save_pdb(str(tmp_path / "in.pdb"))
    code, _, err = run_cli("backmap", tmp_path / "in.xtc", "--top", tmp_path / "in.pdb", "-o", tmp_path / "o.h5",
                           *OPTS)
    assert code == 0, err
    np.testing.assert_allclose(load(tmp_path / "o.h5").unitcell_lengths, lengths / 10.0, atol=1e-5)


@pytest.mark.parametrize("ext", ["pdb", "h5", "xtc", "dcd"])
def test_unboxed_input_writes_no_box(tmp_path, run_cli, ext):
    cg, _, _ = boxed_cg(tmp_path / "in.h5", n_frames=2, boxed=False)
    out = tmp_path / f"out.{ext}"
    code, _, err = run_cli("backmap", cg, "-o", out, *OPTS)
    assert code == 0, err
    if ext == "pdb":
        assert cryst1_lines(out) == []
        return
    if ext != "h5":
        assert cryst1_lines(tmp_path / "out.top.pdb") == []
    t = load(out) if ext == "h5" else load(out, top=str(tmp_path / "out.top.pdb"))
    assert t.unitcell_lengths is None, t.unitcell_lengths


def test_structure_file_box_read_and_written(tmp_path):
    """Many-files mode pieces: a PDB input's CRYST1 is read (CAFrames.cell, per model) and the sinks write it (PDB,
    HDF5, standard output)."""
    res = residues(())
    lengths, angles = (np.repeat(x[:1], 2, axis=0) for x in cells(1))
    prots = [Protein(res, r, SLOT_MASK[res.restype]) for r in rows(res, 2)]
    pdb.write_pdb(prots, tmp_path / "in.pdb", cell=(lengths, angles))
    assert cryst1_lines(tmp_path / "in.pdb") == [pdb.cryst1(lengths[0], angles[0])]  # once: the same cell
    frames = sf.read_ca_frames(str(tmp_path / "in.pdb"))
    np.testing.assert_allclose(frames.cell[0], lengths, atol=1e-3)
    np.testing.assert_allclose(frames.cell[1], angles, atol=1e-2)
    out = rows(res, 2)[:, None]
    StructureFileSink("h5", {}).write(str(tmp_path / "o.h5"), "in.pdb", res, out, cell=frames.cell)
    t = load(tmp_path / "o.h5")
    np.testing.assert_allclose(t.unitcell_lengths, lengths / 10.0, atol=1e-6)
    np.testing.assert_allclose(t.unitcell_angles, angles, atol=1e-4)
    StructureFileSink("pdb", {}).write(str(tmp_path / "o.pdb"), "in.pdb", res, out, cell=frames.cell)
    assert cryst1_lines(tmp_path / "o.pdb") == [pdb.cryst1(lengths[0], angles[0])]
    stream = io.StringIO()
    StreamSink(stream).write(res, out[:1], cell=(frames.cell[0][:1], frames.cell[1][:1]))
    assert stream.getvalue().startswith(pdb.cryst1(lengths[0], angles[0]) + "\n")
    sf.write_rows(str(tmp_path / "no.h5"), "h5", res, out)
    assert load(tmp_path / "no.h5").unitcell_lengths is None
    assert sf.read_ca_frames(str(tmp_path / "o.pdb")).cell is not None
    pdb.write_pdb(prots, tmp_path / "bare.pdb")
    assert sf.read_ca_frames(str(tmp_path / "bare.pdb")).cell is None


def test_many_files_mode_keeps_a_pdb_inputs_box(tmp_path, run_cli):
    res = residues(())
    lengths, angles = cells(1)
    pdb.write_pdb(Protein(res, rows(res, 1)[0], SLOT_MASK[res.restype]), tmp_path / "a.pdb", cell=(lengths, angles))
    (tmp_path / "out").mkdir()
    code, _, err = run_cli("backmap", tmp_path / "a.pdb", "-o", f"{tmp_path / 'out'}/", *OPTS)
    assert code == 0, err
    assert cryst1_lines(tmp_path / "out" / "a.aa.pdb") == [pdb.cryst1(lengths[0], angles[0])]


def test_allatom_writer_cell_per_frame(tmp_path):
    res = residues()
    lengths, angles = cells(3)
    with AllAtomWriter(str(tmp_path / "w.h5"), res, 3, 1, has_cell=True) as w:
        w.write(0, rows(res, 3)[:, None], np.arange(3.0), lengths, np.deg2rad(angles))
    t = load(tmp_path / "w.h5")
    np.testing.assert_allclose(t.unitcell_lengths, lengths / 10.0, rtol=1e-6)
    np.testing.assert_allclose(t.unitcell_angles, angles, atol=1e-4)
    assert sg_sg(t.topology) == [(11, 14)]


def test_exported_pdb_in_row_blocks_is_the_whole_text(tmp_path):
    """CRYST1 where the cell changes and MODEL numbers run on across the blocks of a streamed export."""
    res = residues()
    lengths, angles = cells(4)
    lengths[1] = lengths[0]  # frames 0 and 1 share a cell: one CRYST1 for both
    with AllAtomWriter(str(tmp_path / "w.h5"), res, 4, 2, has_cell=True) as w:
        w.write(0, np.stack([rows(res, 4, seed=1), rows(res, 4, seed=2)], axis=1), np.arange(4.0), lengths,
                np.deg2rad(angles))
    n_atoms = int(SLOT_MASK[res.restype].sum())
    export(str(tmp_path / "w.h5"), str(tmp_path / "small.pdb"), block_bytes=3 * n_atoms * 12)
    export(str(tmp_path / "w.h5"), str(tmp_path / "whole.pdb"))
    text = (tmp_path / "small.pdb").read_text()
    assert text == (tmp_path / "whole.pdb").read_text()
    assert cryst1_lines(tmp_path / "small.pdb") == [pdb.cryst1(a, b) for a, b in zip(lengths[[0, 2, 3]],
                                                                                       angles[[0, 2, 3]])]
    assert "MODEL        8" in text and text.count("ENDMDL") == 8 and text.endswith("END\n")
    t = load(tmp_path / "small.pdb")
    np.testing.assert_allclose(t.xyz, load(tmp_path / "w.h5").xyz, atol=1e-4)
    assert sg_sg(t.topology) == [(11, 14)]


def test_exported_pdb_keeps_every_bond_of_the_topology(tmp_path):
    """An UNK residue's bonds (no reader template) go to CONECT as mdtraj's own writer did: nothing lost."""
    res = residues()
    res.restype[3] = RESTYPE_INDEX["UNK"]
    res.resname[3] = "XYZ"
    sf.write_rows(str(tmp_path / "u.h5"), "h5", res, rows(res, 1)[:, None])
    export(str(tmp_path / "u.h5"), str(tmp_path / "u.pdb"))
    bonds = {frozenset((a.index, b.index)) for a, b in load(tmp_path / "u.h5").topology.bonds}
    assert {frozenset((a.index, b.index)) for a, b in load(tmp_path / "u.pdb").topology.bonds} == bonds
