"""Input paths (ldb_hpc.io.paths): extensions, globs, and folders read recursively (prepare) or not (backmap)."""

from __future__ import annotations

import os

import pytest

from ldb_hpc.errors import InputError
from ldb_hpc.io import paths
from ldb_hpc.io.sources import collect_structure_files
from ldb_hpc.io.structure_files import expand_inputs


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for p in ["a/x.pdb", "a/.h.pdb", "a/y.CIF.gz", "a/readme.txt", "a/m.pdbx", "a/sub/z.ent", "b/dir.pdb/k.pdb",
              "c/none.txt", "e[1].pdb"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text("x")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_extensions():
    assert paths.extension("d/X.PDB.GZ") == ".pdb.gz" and paths.extension("x.cif") == ".cif"
    assert paths.is_structure_name("Y.CIF.gz") and paths.is_structure_name("q.mmcif")
    # .pdbx and .gro are read by mdtraj, not taken from folders and globs of structure files
    assert not paths.is_structure_name("m.pdbx") and ".pdbx" in paths.MDTRAJ_STRUCTURE_EXTENSIONS
    assert set(paths.STRUCTURE_EXTENSIONS) < set(paths.MDTRAJ_STRUCTURE_EXTENSIONS)
    assert paths.is_glob("a/*.pdb") and paths.is_glob("x?.pdb") and paths.is_glob("[ab].pdb")
    assert not paths.is_glob("a/x.pdb")


def test_folders_recursive_or_not(tree):
    assert paths.folder_files("a", recursive=False) == ["a/x.pdb", "a/y.CIF.gz"]
    assert paths.folder_files("a", recursive=True) == ["a/.h.pdb", "a/sub/z.ent", "a/x.pdb", "a/y.CIF.gz"]
    # a folder named like a structure file is not a file
    assert paths.folder_files("b", recursive=False) == []
    assert paths.folder_files("b", recursive=True) == ["b/dir.pdb/k.pdb"]


def test_globs_recursive_or_not(tree):
    rec = paths.expand_one("*", recursive=True)
    assert rec.kind == "glob" and "e[1].pdb" in rec.paths and "b/dir.pdb/k.pdb" in rec.paths
    flat = paths.expand_one("a/*", recursive=False)
    assert flat.paths == ["a/m.pdbx", "a/readme.txt", "a/x.pdb", "a/y.CIF.gz"]  # files of any name, no folders
    assert paths.expand_one("a/*", recursive=True).paths == ["a/sub/z.ent", "a/x.pdb", "a/y.CIF.gz"]
    assert paths.expand_one("**/*.ent", recursive=False).paths == ["a/sub/z.ent"]
    assert paths.expand_one("c/*", recursive=True).paths == [] and paths.expand_one("c/*", True).matches == 1
    assert paths.expand_one("nothing*", recursive=True).matches == 0
    # an existing name with glob characters is a file, not a pattern
    assert paths.expand_one("e[1].pdb", recursive=False).kind == "file"


def test_prepare_expansion(tree):
    assert collect_structure_files(["a", "a/x.pdb", "c/none.txt"]) == ["a/.h.pdb", "a/sub/z.ent", "a/x.pdb",
                                                                       "a/y.CIF.gz", "c/none.txt"]
    with pytest.raises(InputError, match="no files match nothing"):
        collect_structure_files(["nothing*"])
    with pytest.raises(InputError, match="input file not found: gone.pdb"):
        collect_structure_files(["gone.pdb"])
    with pytest.raises(InputError, match=r"no structure files \(.pdb, .pdb.gz, .ent"):
        collect_structure_files(["c/*"])


def test_backmap_expansion(tree):
    got = [(i.path, i.problem, i.note) for i in expand_inputs(["a", "empty", "x*", "-", "./a/x.pdb"])]
    assert got == [("a/x.pdb", None, None), ("a/y.CIF.gz", None, None),
                   ("empty", "no PDB/mmCIF file (.pdb, .pdb.gz, .ent, .ent.gz, .cif, .cif.gz, .mmcif, .mmcif.gz) in "
                    "folder empty", None),
                   ("x*", "no file matches 'x*'", None), ("-", None, None),
                   ("./a/x.pdb", None, "named twice (also as a/x.pdb); backmapped once")]
    assert os.path.exists("a/readme.txt")
