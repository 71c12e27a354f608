"""Residue naming (ldb_hpc.io.naming): the one set of rules every reader uses, and where they differ on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from ldb_hpc.chem.residues import RESTYPE_INDEX, SLOT_INDEX, UNK
from ldb_hpc.errors import InputError
from ldb_hpc.io import naming
from ldb_hpc.io.topology import ParsedTopology, aa_residues


@pytest.mark.parametrize("name, std", [("HSD", "HIS"), ("hse", "HIS"), ("HIP", "HIS"), ("CYX", "CYS"),
                                       ("MSE", "MET"), ("ASH", "ASP"), (" GLY ", "GLY"), ("LRT", "LRT")])
def test_residue_aliases(name, std):
    assert naming.standard_resname(name, {}) == std


def test_residue_map_first_then_aliases_and_the_map_normalised_switch():
    m = naming.clean_residue_map({" lrt ": "lys ", "HIS": "ALA"})
    assert m == {"LRT": "LYS", "HIS": "ALA"}
    assert naming.standard_resname("lrt", m) == "LYS"
    # mdtraj and HDF5 topologies: the map also renames the aliases of its names; PDB/mmCIF: names as written only
    assert naming.standard_resname("HSD", m, map_normalised=True) == "ALA"
    assert naming.standard_resname("HSD", m, map_normalised=False) == "HIS"
    assert naming.standard_resname("HIS", m, map_normalised=False) == "ALA"


def test_check_residue_map_names_bad_targets():
    naming.check_residue_map({"LRT": "LYS"})
    with pytest.raises(InputError, match="residue map targets must be standard residue names: LRT=XYZ"):
        naming.check_residue_map({"LRT": "XYZ", "MLY": "LYS"})


def test_resolve_restypes_unknown_names_keep_unknown_and_map():
    names = ["ALA", "LRT", "hsd", "LRT"]
    with pytest.raises(InputError, match=r"LRT \(2 residues, first A:1\).*--map-residue LRT=XXX"):
        naming.resolve_restypes(names, labels=["A:0", "A:1", "A:2", "A:3"])
    assert list(naming.resolve_restypes(names, keep_unknown=True)) == [RESTYPE_INDEX["ALA"], UNK,
                                                                         RESTYPE_INDEX["HIS"], UNK]
    assert list(naming.resolve_restypes(names, {"LRT": "LYS"}))[1] == RESTYPE_INDEX["LYS"]


@pytest.mark.parametrize("res, name, slot", [("ILE", "CD", "CD1"), ("ILE", "CD1", "CD1"), ("MET", "SE", "SD"),
                                             ("ALA", "OT1", "O"), ("ALA", "O1", "O"), ("GLY", " ca ", "CA")])
def test_atom_aliases(res, name, slot):
    assert naming.atom_slot(res, name) == SLOT_INDEX[(res, slot)]


def test_atoms_without_a_slot_get_a_reason():
    assert naming.atom_slot("ALA", "OXT") == naming.OXT
    assert naming.atom_slot("ALA", "OT2") == naming.OXT
    assert naming.atom_slot("ALA", "O2") == naming.OXT
    assert naming.atom_slot("ALA", "CG") == naming.NONSTANDARD
    assert naming.atom_slot("UNK", "CB") == naming.UNK_SIDE_CHAIN


def test_unk_exact_keeps_modified_residue_oxygens():
    # PDB/mmCIF: in a modified residue read as UNK, O1/O2 are side-chain atoms; OT1/OT2 stay terminal oxygens
    assert naming.atom_slot("UNK", "O1", unk_exact=True) == naming.UNK_SIDE_CHAIN
    assert naming.atom_slot("UNK", "O2", unk_exact=True) == naming.UNK_SIDE_CHAIN
    assert naming.atom_slot("UNK", "OT1", unk_exact=True) == SLOT_INDEX[("UNK", "O")]
    assert naming.atom_slot("UNK", "OT2", unk_exact=True) == naming.OXT
    # mdtraj inputs and HDF5 topologies: the aliases apply to UNK too
    assert naming.atom_slot("UNK", "O1") == SLOT_INDEX[("UNK", "O")]
    assert naming.atom_slot("UNK", "O2") == naming.OXT


def test_duplicates_keep_or_error():
    names = ["N", "CA", "C", "O", "OT1", "OXT", "CB"]
    o = SLOT_INDEX[("ALA", "O")]
    assert naming.atom_slots("ALA", names, duplicates="keep") == [0, 1, 2, o, o, naming.OXT, 4]
    with pytest.raises(naming.DuplicateAtom) as info:
        naming.atom_slots("ALA", names, duplicates="error")
    assert info.value.name == "O"
    # OXT twice is no duplicate (no slot)
    assert naming.atom_slots("ALA", ["OXT", "OT2"], duplicates="error") == [naming.OXT, naming.OXT]
    with pytest.raises(ValueError):
        naming.atom_slots("ALA", names, duplicates="first")


def test_hdf5_topology_keeps_every_atom_on_its_slot():
    """aa_residues (all-atom MDTraj-HDF5): aliases apply, OXT and hydrogens get -1, a duplicate keeps its slot."""
    atom_name = np.array(["N", "CA", "C", "O", "CB", "N", "CA", "C", "OT1", "O", "OXT", "H", "SE"], dtype=object)
    topo = ParsedTopology(resname=np.array(["ALA", "MSE"], dtype=object), chain_id=np.array(["A", "A"], dtype=object),
                          resseq=np.array([1, 2]), atom_residue=np.array([0] * 5 + [1] * 8),
                          atom_name=atom_name, atom_element=np.array([""] * 13, dtype=object),
                          bonds=np.array([[2, 5]]))
    residues, atom_slot, mask = aa_residues(topo)
    assert list(residues.restype) == [RESTYPE_INDEX["ALA"], RESTYPE_INDEX["MET"]]
    assert list(atom_slot) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 3, -1, -1, SLOT_INDEX[("MET", "SD")]]
    assert mask[1].sum() == 5 and list(residues.segment) == [0, 0]


def test_mdtraj_selection_refuses_an_atom_twice_and_skips_oxt():
    """select_protein (mdtraj inputs): duplicates="error" with the message naming residue and atom."""
    import mdtraj

    top = mdtraj.Topology()
    chain = top.add_chain()
    res = top.add_residue("ALA", chain, resSeq=7)
    for name, el in (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"), ("CB", "C"), ("OXT", "O")):
        top.add_atom(name, mdtraj.element.get_by_symbol(el), res)
    from ldb_hpc.io.mdtraj_bridge import select_protein

    sel = select_protein(top)
    assert list(sel.atom_slot) == [0, 1, 2, 3, 4] and sel.unmapped == []
    top.add_atom("OT1", mdtraj.element.oxygen, res)
    with pytest.raises(InputError, match=r"residue ALA A:7 has atom O twice \(e.g. both O and OT1\)"):
        select_protein(top, source="x.pdb")
