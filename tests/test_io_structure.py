"""PDB/mmCIF → atom14 parsing (ldb_hpc.io.structure) and PDB writing (ldb_hpc.io.pdb)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from ldb_hpc.chem.residues import ATOM14, RESTYPE_INDEX, SLOT_INDEX, UNK
from ldb_hpc.errors import InputError
from ldb_hpc.io.pdb import protein_to_pdb_string, write_pdb
from ldb_hpc.io.structure import read_structure, read_structure_with_report


def pdb_line(serial, name, resname, chain, resseq, xyz, *, icode=" ", altloc=" ", element=None,
             record="ATOM", tail=None):
    """One PDB ATOM/HETATM line; ``tail`` replaces columns 73-80 (legacy entry ID + serial)."""
    field = name if len(name) >= 4 else f" {name:<3}"
    el = element or name.lstrip("0123456789")[0]
    line = (f"{record:<6}{serial:5d} {field}{altloc}{resname:>3} {chain}{resseq:4d}{icode}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{1.0:6.2f}{10.0:6.2f}")
    if tail is not None:
        return line + f"      {tail:<8}"
    return line + f"          {el:>2}  "


class Builder:
    """Collects PDB lines for residues laid out along x (CA–CA 3.8 Å unless moved)."""

    def __init__(self):
        self.lines: list[str] = []
        self.serial = 0

    def atom(self, name, resname, chain, resseq, xyz, **kw):
        self.serial += 1
        self.lines.append(pdb_line(self.serial, name, resname, chain, resseq, xyz, **kw))

    def residue(self, resname, chain, resseq, x, atoms, **kw):
        """atoms: names; positions are CA at (x, 0, 0) plus a fixed offset per atom index."""
        for k, name in enumerate(atoms):
            self.atom(name, resname, chain, resseq, offset(x, k), **kw)

    def text(self):
        return "\n".join(self.lines + ["END"]) + "\n"


def offset(x, k):
    """Position of the k-th atom of a residue whose CA is at (x, 0, 0); k = 1 is CA itself."""
    if k == 1:
        return (x, 0.0, 0.0)
    return (x + 0.3 * k - 0.9, 1.0 + 0.1 * k, 0.5 * (k % 3))


def feature_pdb() -> str:
    """Chain A: MSE(HETATM) HSD ILE(altlocs, CD) ALA(icode 3A, H/D atoms) LYS(missing side chain)
    GLY(OT1/OT2) | break | ALA 20; chain B: SER (legacy columns). Plus water and a sulfate."""
    b = Builder()
    b.residue("MSE", "A", 1, 0.0, ["N", "CA", "C", "O", "CB", "CG", "SE", "CE"], record="HETATM")
    b.residue("HSD", "A", 2, 3.8, ["N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2", "HD1"])
    for k, name in enumerate(["N", "CA", "C", "O"]):
        b.atom(name, "ILE", "A", 3, offset(7.6, k))
    b.atom("CB", "ILE", "A", 3, (7.6, -1.5, 0.0), altloc="A")
    b.atom("CB", "ILE", "A", 3, (7.6, -1.5, 9.0), altloc="B")
    b.atom("CG1", "ILE", "A", 3, (7.6, -2.5, 0.0), altloc="A")
    b.atom("CG1", "ILE", "A", 3, (7.6, -2.5, 9.0), altloc="B")
    b.atom("CG2", "ILE", "A", 3, (8.6, -1.5, 0.0))
    b.atom("CD", "ILE", "A", 3, (7.6, -3.9, 0.1))
    b.residue("ALA", "A", 3, 11.4, ["N", "CA", "C", "O", "CB"], icode="A")
    b.atom("H", "ALA", "A", 3, (11.0, 1.0, 1.0), icode="A")
    b.atom("1HB", "ALA", "A", 3, (11.0, 1.5, 1.0), icode="A")
    b.atom("D", "ALA", "A", 3, (11.0, 2.0, 1.0), icode="A", element="D")
    b.residue("LYS", "A", 4, 15.2, ["N", "CA", "C", "O", "CB"])
    b.residue("GLY", "A", 5, 19.0, ["N", "CA", "C", "OT1", "OT2"])
    b.residue("ALA", "A", 20, 40.0, ["N", "CA", "C", "O", "CB"])
    b.lines.append("TER")
    for k, name in enumerate(["N", "CA", "C", "O", "CB", "OG"]):
        b.serial += 1
        b.lines.append(pdb_line(b.serial, name, "SER", "B", 1, offset(0.0, k) + np.r_[0, 20, 0],
                                tail=f"1ABC{b.serial:4d}"))
    b.atom("O", "HOH", "A", 101, (50.0, 50.0, 50.0), record="HETATM")
    for k, name in enumerate(["S", "O1", "O2", "O3", "O4"]):
        b.atom(name, "SO4", "A", 102, (60.0 + k, 50.0, 50.0), record="HETATM")
    return b.text()


@pytest.fixture()
def feature_file(tmp_path):
    path = tmp_path / "features.pdb"
    path.write_text(feature_pdb())
    return path


def test_parse_features(feature_file):
    (prot,), rep = read_structure_with_report(feature_file)
    res = prot.residues
    assert res.standard_names == ["MET", "HIS", "ILE", "ALA", "LYS", "GLY", "ALA", "SER"]
    assert list(res.resname) == ["MSE", "HSD", "ILE", "ALA", "LYS", "GLY", "ALA", "SER"]
    assert list(res.resseq) == [1, 2, 3, 3, 4, 5, 20, 1]
    assert list(res.icode) == ["", "", "", "A", "", "", "", ""]
    assert list(res.chain_id) == ["A"] * 7 + ["B"]
    # Chain break between GLY 5 and ALA 20 (CA–CA 21 Å) and a new chain for B.
    assert list(res.segment) == [0, 0, 0, 0, 0, 0, 1, 2]
    # MSE: SE goes to the SD slot.
    sd = SLOT_INDEX[("MET", "SD")]
    assert prot.mask[0, sd]
    np.testing.assert_allclose(prot.positions[0, sd], offset(0.0, 6), atol=1e-3)
    # ILE: first altloc kept, CD → CD1.
    assert prot.positions[2, SLOT_INDEX[("ILE", "CB")], 2] == pytest.approx(0.0)
    assert prot.positions[2, SLOT_INDEX[("ILE", "CG1")], 2] == pytest.approx(0.0)
    np.testing.assert_allclose(prot.positions[2, SLOT_INDEX[("ILE", "CD1")]], (7.6, -3.9, 0.1), atol=1e-3)
    assert prot.mask[2].sum() == 8
    # LYS with only CB: CG, CD, CE, NZ masked and zero.
    lys = SLOT_INDEX[("LYS", "CG")]
    assert prot.mask[4].sum() == 5 and not prot.mask[4, lys:9].any()
    assert np.all(prot.positions[4, ~prot.mask[4]] == 0)
    # GLY OT1 → O.
    np.testing.assert_allclose(prot.positions[5, 3], offset(19.0, 3), atol=1e-3)
    # Legacy columns 73-80 do not hurt.
    assert prot.mask[7, :6].all()
    # Counts of what was left out.
    assert rep.atoms_ignored["hydrogen"] == 4  # HD1, H, 1HB, D
    assert rep.atoms_ignored["OXT"] == 1
    assert rep.atoms_ignored["alternate conformer"] == 2
    assert rep.residues_ignored["water"] == 1 and rep.residues_ignored["ligand"] == 1
    assert rep.residues == 8 and rep.chains == 2 and rep.segments == 3
    assert rep.atoms_missing == int((prot.residues.atom_mask() & ~prot.mask).sum())
    assert rep.atoms_missing == 4  # the LYS side chain


def two_model_text() -> str:
    out = []
    for m, shift in ((1, 0.0), (2, 5.0)):
        b = Builder()
        b.residue("ALA", "A", 1, 0.0 + shift, ["N", "CA", "C", "O", "CB"])
        b.residue("GLY", "A", 2, 3.8 + shift, ["N", "CA", "C", "O"])
        out += [f"MODEL     {m:4d}"] + b.lines + ["ENDMDL"]
    return "\n".join(out + ["END"]) + "\n"


def test_models(tmp_path):
    path = tmp_path / "two.pdb"
    path.write_text(two_model_text())
    first = read_structure(path)
    both, rep = read_structure_with_report(path, models="all")
    second = read_structure(path, models=1)
    assert len(first) == 1 and len(both) == 2 and rep.n_models == 2 and rep.models_read == 2
    np.testing.assert_allclose(both[0].positions, first[0].positions)
    np.testing.assert_allclose(both[1].positions, second[0].positions)
    assert both[1].ca[0, 0] == pytest.approx(5.0)
    with pytest.raises(InputError, match="out of range"):
        read_structure(path, models=2)


MMCIF = """data_test
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_entity_id
_atom_site.label_seq_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM 1 N N . ALA A 1 1 ? 0.000 1.000 0.000 1 10 5 X 1
ATOM 2 C CA . ALA A 1 1 ? 1.000 0.000 0.000 1 10 5 X 1
ATOM 3 C C . ALA A 1 1 ? 2.000 1.000 0.000 1 10 5 X 1
ATOM 4 O O . ALA A 1 1 ? 2.000 2.000 0.500 1 10 5 X 1
ATOM 5 C CB . ALA A 1 1 ? 1.000 -1.000 1.000 1 10 5 X 1
ATOM 6 H H . ALA A 1 1 ? 0.000 1.500 1.000 1 10 5 X 1
HETATM 7 N N . MSE A 1 2 B 4.800 1.000 0.000 1 10 5 X 1
HETATM 8 C CA . MSE A 1 2 B 4.800 0.000 0.000 1 10 5 X 1
HETATM 9 C C . MSE A 1 2 B 5.800 1.000 0.000 1 10 5 X 1
HETATM 10 SE SE . MSE A 1 2 B 4.000 -2.000 1.000 1 10 5 X 1
"""


@pytest.mark.parametrize("gz", [False, True])
def test_mmcif(tmp_path, gz):
    path = tmp_path / ("x.cif.gz" if gz else "x.cif")
    data = MMCIF.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    (prot,), rep = read_structure_with_report(path)
    assert prot.residues.standard_names == ["ALA", "MET"]
    assert list(prot.residues.chain_id) == ["X", "X"] and list(prot.residues.resseq) == [5, 5]
    assert list(prot.residues.icode) == ["", "B"]
    np.testing.assert_allclose(prot.positions[1, SLOT_INDEX[("MET", "SD")]], (4.0, -2.0, 1.0), atol=1e-4)
    assert rep.atoms_ignored["hydrogen"] == 1


def test_gzipped_pdb_and_content_sniffing(tmp_path, feature_file):
    gz = tmp_path / "f.pdb.gz"
    gz.write_bytes(gzip.compress(feature_file.read_bytes()))
    cif_named_txt = tmp_path / "structure.txt"
    cif_named_txt.write_text(MMCIF)
    a, b = read_structure(feature_file)[0], read_structure(gz)[0]
    np.testing.assert_array_equal(a.positions, b.positions)
    assert read_structure(cif_named_txt)[0].residues.standard_names == ["ALA", "MET"]


def test_residue_without_ca_is_skipped_and_breaks(tmp_path):
    b = Builder()
    b.residue("ALA", "A", 1, 0.0, ["N", "CA", "C", "O", "CB"])
    b.residue("GLY", "A", 2, 3.8, ["N", "C", "O"])  # no CA
    # Residue 3 is placed 3.8 Å from residue 1 so only the skip can break the chain here.
    b.residue("ALA", "A", 3, 3.8, ["N", "CA", "C", "O", "CB"])
    path = tmp_path / "noca.pdb"
    path.write_text(b.text())
    (prot,), rep = read_structure_with_report(path)
    assert list(prot.residues.resseq) == [1, 3]
    assert rep.residues_skipped["no CA atom"] == 1
    assert list(prot.residues.segment) == [0, 1]


def unknown_text() -> str:
    b = Builder()
    b.residue("ALA", "A", 1, 0.0, ["N", "CA", "C", "O", "CB"])
    b.residue("LRT", "A", 2, 3.8, ["N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ", "C1", "O1"], record="HETATM")
    b.residue("GLY", "A", 3, 7.6, ["N", "CA", "C", "O"])
    return b.text()


def test_unknown_residues(tmp_path):
    path = tmp_path / "unk.pdb"
    path.write_text(unknown_text())
    with pytest.raises(InputError) as err:
        read_structure(path)
    msg = str(err.value)
    assert "unknown residue names" in msg and "LRT" in msg and "--map-residue LRT=LYS" in msg
    (mapped,), rep = read_structure_with_report(path, residue_map={"lrt": "lys"})
    assert mapped.residues.standard_names[1] == "LYS" and mapped.mask[1].sum() == 9
    assert list(mapped.residues.resname) == ["ALA", "LRT", "GLY"]
    assert rep.mapped["LRT"] == 1
    # C1 has no LYS slot; O1 reads as O (terminal-oxygen alias) and O is already there.
    assert rep.atoms_ignored["non-standard name"] == 1 and rep.atoms_ignored["duplicate name"] == 1
    (kept,), rep = read_structure_with_report(path, keep_unknown=True)
    assert kept.residues.restype[1] == UNK
    assert kept.mask[1].tolist() == [True] * 4 + [False] * 10  # O1 is not taken for O
    np.testing.assert_allclose(kept.positions[1, 3], offset(3.8, 3), atol=1e-3)
    assert rep.unknown_as_unk["LRT"] == 1 and rep.atoms_ignored["side chain of UNK"] == 7
    with pytest.raises(InputError, match="standard residue"):
        read_structure(path, residue_map={"LRT": "XYZ"})


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_structure(tmp_path / "missing.pdb")
    with pytest.raises(InputError, match="directory"):
        read_structure(tmp_path)
    garbage = tmp_path / "garbage.pdb"
    garbage.write_bytes(b"this is not\na structure\n")
    with pytest.raises(InputError, match="no atoms"):
        read_structure(garbage)
    binary = tmp_path / "binary.cif"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="binary"):
        read_structure(binary)
    bad_cif = tmp_path / "bad.cif"
    bad_cif.write_text("data_x\nloop_\n_atom_site.id\n'unterminated\n")
    with pytest.raises(InputError, match="cannot parse"):
        read_structure(bad_cif)
    water = tmp_path / "water.pdb"
    water.write_text(pdb_line(1, "O", "HOH", "A", 1, (0, 0, 0), record="HETATM") + "\nEND\n")
    with pytest.raises(InputError, match="no protein residues in .*water.pdb"):
        read_structure(water)


def _same_atoms(a, b, tol=1e-3):
    assert a.residues.standard_names == b.residues.standard_names
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.residues.resseq, b.residues.resseq)
    np.testing.assert_array_equal(a.residues.icode, b.residues.icode)
    np.testing.assert_array_equal(a.residues.chain_id, b.residues.chain_id)
    np.testing.assert_array_equal(a.residues.segment, b.residues.segment)
    d = np.abs(a.positions - b.positions)[a.mask]
    assert d.max(initial=0.0) <= tol, f"max deviation {d.max()} Å"


def test_round_trip(tmp_path, feature_file):
    (prot,) = read_structure(feature_file)
    out = tmp_path / "out.pdb"
    write_pdb(prot, out)
    (back,) = read_structure(out)
    _same_atoms(prot, back)
    # Standard names and elements are written; the round trip is a fixed point.
    text = out.read_text()
    assert " MET A   1" in text and "HSD" not in text and " SD  MET" in text
    assert protein_to_pdb_string(back) == protein_to_pdb_string(prot)
    gz = tmp_path / "out.pdb.gz"
    write_pdb([prot, back], gz)
    models = read_structure(gz, models="all")
    assert len(models) == 2
    _same_atoms(models[1], prot)


def test_write_rejects_unwritable_fields(tmp_path, feature_file):
    (prot,) = read_structure(feature_file)
    prot.residues.resseq[0] = 12345
    with pytest.raises(InputError, match="residue numbers"):
        write_pdb(prot, tmp_path / "x.pdb")
    assert not (tmp_path / "x.pdb").exists()


def test_round_trip_casp12(tmp_path, shared_data):
    files = sorted((shared_data / "test" / "casp12").glob("*.pdb"))
    assert len(files) == 24
    for path in files:
        (prot,), rep = read_structure_with_report(path)
        assert len(prot) > 0
        out = tmp_path / path.name
        write_pdb(prot, out)
        (back,) = read_structure(out)
        _same_atoms(prot, back)
        # Every heavy atom of the file is either in a slot or accounted for as OXT.
        assert set(rep.atoms_ignored) <= {"OXT", "hydrogen"}, (path.name, rep.atoms_ignored)


def test_each_standard_residue_round_trips(tmp_path):
    b = Builder()
    names = [n for n in ATOM14 if n != "UNK"]
    for i, name in enumerate(names):
        b.residue(name, "C", i + 1, 3.8 * i, list(ATOM14[name]))
    path = tmp_path / "all20.pdb"
    path.write_text(b.text())
    (prot,) = read_structure(path)
    assert prot.residues.standard_names == names
    assert np.array_equal(prot.mask, prot.residues.atom_mask())
    for i, name in enumerate(names):
        assert prot.residues.restype[i] == RESTYPE_INDEX[name]
    write_pdb(prot, tmp_path / "again.pdb")
    _same_atoms(prot, read_structure(tmp_path / "again.pdb")[0])
