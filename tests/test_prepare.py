"""``ldb-hpc prepare`` and the training HDF5 (ldb_hpc.io.training_set, ldb_hpc.cli.prepare), in-process."""

from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest
from test_io_structure import MMCIF, Builder, feature_pdb, two_model_text, unknown_text

from ldb_hpc.chem.residues import RESTYPE_INDEX, UNK
from ldb_hpc.errors import InputError
from ldb_hpc.io.sources import Manifest, ManifestEntry, collect_structure_files
from ldb_hpc.io.structure import read_structure
from ldb_hpc.io.training_set import Chains, cluster_split, read_training_set, split_keys


def chain_pdb(chain: str, names: list[str]) -> str:
    b = Builder()
    for i, name in enumerate(names):
        b.residue(name, chain, i + 1, 3.8 * i, ["N", "CA", "C", "O", "CB"][: 4 if name == "GLY" else 5])
    return b.text()


@pytest.fixture()
def dataset(tmp_path):
    """data/train/{a,b}/... with a feature file, a 2-model file, an mmCIF, an unknown residue,
    a garbage file, a same-name file in two folders, and a manifest."""
    root = tmp_path / "data"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "b").mkdir(parents=True)
    (root / "train" / "a" / "feat.pdb").write_text(feature_pdb())
    (root / "train" / "a" / "two.pdb.gz").write_bytes(gzip.compress(two_model_text().encode()))
    (root / "train" / "b" / "x.cif").write_text(MMCIF)
    (root / "train" / "b" / "unk.ent").write_text(unknown_text())
    (root / "train" / "b" / "garbage.pdb").write_text("not a structure\n")
    (root / "train" / "b" / "two.pdb.gz").write_bytes(gzip.compress(chain_pdb("Q", ["ALA", "GLY"]).encode()))
    (root / "train" / "b" / "notes.txt").write_text("ignored: not a structure name\n")
    manifest = root / "MANIFEST.tsv"
    rows = [
        ("train/a/feat.pdb", "A", 7, "c95|1", "c40|1"),
        ("train/a/feat.pdb", "B", 1, "c95|2", "c40|1"),
        ("train/a/two.pdb.gz", "A", 2, "c95|3", "c40|2"),
        ("train/b/two.pdb.gz", "Q", 2, "c95|4", "c40|3"),
        ("train/b/x.cif", "X", 2, "c95|5", "c40|4"),
    ]
    manifest.write_text("file\tchain\tn_res\tcluster95\tcluster40\tsequence\tsource\n"
                        + "".join(f"{f}\t{c}\t{n}\t{a}\t{b}\tSEQ\tsrc\n" for f, c, n, a, b in rows))
    return root


def test_prepare_dataset(dataset, tmp_path, run_cli):
    out = tmp_path / "train.h5"
    code, stdout, err = run_cli(*["prepare", str(dataset / "train"), "-o", str(out),
                                 "--manifest", str(dataset / "MANIFEST.tsv"), "--workers", "1"])
    assert code == 0, err
    assert "files skipped" in stdout and "garbage.pdb" in stdout
    with h5py.File(out, "r") as h5:
        files = h5["files"].asstr()[:].tolist()
        # Sorted walk; garbage skipped; notes.txt not collected.
        assert [f.split("data/")[1] for f in files] == [
            "train/a/feat.pdb", "train/a/two.pdb.gz", "train/b/two.pdb.gz", "train/b/unk.ent", "train/b/x.cif"]
        n = h5["restype"].shape[0]
        assert n == 8 + 2 + 2 + 3 + 2  # 2-model file contributes its first model only
        assert h5["positions"].shape == (n, 14, 3) and h5["positions"].dtype == np.float32
        assert h5["mask"].shape == (n, 14) and h5["mask"].dtype == bool
        assert h5["restype"].dtype == np.int8
        assert h5["positions"].compression == "gzip" and h5["positions"].chunks[1:] == (14, 3)
        ch = {k: (v.asstr()[:] if h5py.check_string_dtype(v.dtype) else v[:]) for k, v in h5["chains"].items()}
        assert ch["chain_id"].tolist() == ["A", "B", "A", "Q", "A", "X"]
        assert ch["file"].tolist() == [0, 0, 1, 2, 3, 4]
        assert ch["count"].tolist() == [7, 1, 2, 2, 3, 2]
        assert ch["offset"].tolist() == [0, 7, 8, 10, 12, 15]
        assert ch["cluster40"].tolist() == ["c40|1", "c40|1", "c40|2", "c40|3", "", "c40|4"]
        assert ch["cluster95"].tolist() == ["c95|1", "c95|2", "c95|3", "c95|4", "", "c95|5"]
        assert ch["manifest_n_res"].tolist() == [7, 1, 2, 2, -1, 2]
        chain_index = h5["chain_index"][:]
        source = h5["source"][:]
        assert np.array_equal(chain_index, np.repeat(np.arange(6), ch["count"]))
        assert np.array_equal(source, ch["file"][chain_index])
        # Global segment ids: feat.pdb has 3 segments, the others one per chain.
        assert h5["segment"][:].tolist() == [0] * 6 + [1] + [2] + [3] * 2 + [4] * 2 + [5] * 3 + [6] * 2
        assert h5["restype"][12 + 1] == UNK and h5["resname"][13] == b"LRT"
        assert h5["icode"][3] == b"A" and h5["resseq"][3] == 3
        assert h5["skipped/file"].asstr()[:].tolist()[0].endswith("garbage.pdb")
        assert "no atoms" in h5["skipped/reason"].asstr()[0]
        assert h5.attrs["units"] == "angstrom"
    # The stored residues are the parsed ones.
    data = read_training_set(str(out))
    (feat,) = read_structure(dataset / "train" / "a" / "feat.pdb")
    np.testing.assert_array_equal(data.positions[:8], feat.positions)
    np.testing.assert_array_equal(data.mask[:8], feat.mask)
    assert data.restype[0] == RESTYPE_INDEX["MET"]


def test_prepare_workers_deterministic(dataset, tmp_path, run_cli):
    outs = []
    for w in ("1", "2"):
        out = tmp_path / f"w{w}.h5"
        code, _, err = run_cli(*["prepare", str(dataset / "train" / "b"), str(dataset / "train" / "a"),
                                "-o", str(out), "--workers", w, "--compression", "lzf"])
        assert code == 0, err
        outs.append(read_training_set(str(out)))
    a, b = outs
    assert a.chains.files == b.chains.files and a.chains.files[0].endswith("b/two.pdb.gz")
    for k in ("positions", "mask", "restype", "segment", "chain_index", "source"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_prepare_glob_and_map_residue(dataset, tmp_path, run_cli):
    out = tmp_path / "g.h5"
    code, stdout, err = run_cli(*["prepare", str(dataset / "train" / "**" / "u*.ent"), "-o", str(out),
                                 "--map-residue", "LRT=LYS"])
    assert code == 0, err
    data = read_training_set(str(out))
    assert len(data.chains.files) == 1 and data.restype[1] == RESTYPE_INDEX["LYS"]
    assert "mapped with --map-residue" in stdout


def assert_one_error_line(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_prepare_errors(dataset, tmp_path, run_cli):
    out = tmp_path / "o.h5"
    b = dataset / "train" / "b"
    code, _, err = run_cli(*["prepare", str(tmp_path / "missing.pdb"), "-o", str(out)])
    assert_one_error_line(code, err, "not found", "missing.pdb")
    code, _, err = run_cli(*["prepare", str(b / "garbage.pdb"), "-o", str(out)])
    assert_one_error_line(code, err, "garbage.pdb", "no atoms")
    water = tmp_path / "water.pdb"
    water.write_text("HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00 10.00           O  \nEND\n")
    code, _, err = run_cli(*["prepare", str(water), "-o", str(out)])
    assert_one_error_line(code, err, "no protein residues in", "water.pdb")
    code, _, err = run_cli(*["prepare", str(b / "unk.ent"), "-o", str(out), "--strict"])
    assert_one_error_line(code, err, "unknown residue names", "LRT", "--map-residue LRT=LYS")
    code, _, err = run_cli(*["prepare", str(b), "-o", str(out), "--strict", "--map-residue", "LRT=LYS"])
    assert_one_error_line(code, err, "garbage.pdb")
    code, _, err = run_cli(*["prepare", str(tmp_path / "nothing*.pdb"), "-o", str(out)])
    assert_one_error_line(code, err, "no files match")
    code, _, err = run_cli(*["prepare", str(b), "-o", str(out), "--manifest", str(tmp_path / "no.tsv")])
    assert_one_error_line(code, err, "manifest not found")
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tchain\n")
    code, _, err = run_cli(*["prepare", str(b), "-o", str(out), "--manifest", str(bad)])
    assert_one_error_line(code, err, "lacks column", "cluster40")
    # No output, and no temporary file left behind, after any failed run.
    assert not out.exists()
    assert not list(tmp_path.glob(".o.h5.tmp*"))


def test_prepare_refuses_existing_output(dataset, tmp_path, run_cli):
    out = tmp_path / "o.h5"
    out.write_bytes(b"old")
    a = dataset / "train" / "a"
    code, _, err = run_cli(*["prepare", str(a), "-o", str(out)])
    assert_one_error_line(code, err, "--overwrite")
    assert out.read_bytes() == b"old"
    code, _, err = run_cli(*["prepare", str(a), "-o", str(out), "--overwrite"])
    assert code == 0, err
    assert len(read_training_set(str(out)).chains.files) == 2


def test_collect_structure_files(dataset, tmp_path):
    b = dataset / "train" / "b"
    files = collect_structure_files([str(b), str(b / "x.cif"), str(b / "notes.txt")])
    names = [f.rsplit("/", 1)[1] for f in files]
    # Directory walk is sorted and filtered; duplicates dropped; an explicit file is taken as is.
    assert names == ["garbage.pdb", "two.pdb.gz", "unk.ent", "x.cif", "notes.txt"]
    with pytest.raises(InputError, match="no structure files"):
        collect_structure_files([str(dataset / "train" / "b" / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no structure files"):
        collect_structure_files([str(tmp_path / "empty")])


def test_manifest_matching_uses_path_components():
    m = Manifest([ManifestEntry("train/bm5/X_l_u.pdb.gz", "B", 10, "p", "P"),
                  ManifestEntry("train/antibody/X_l_u.pdb.gz", "", 10, "q", "Q"),
                  ManifestEntry("train/ddg/only.pdb.gz", "A", 5, "r", "R")])
    assert m.match_file("/data/train/antibody/X_l_u.pdb.gz") == "train/antibody/X_l_u.pdb.gz"
    assert m.match_file("/elsewhere/bm5/X_l_u.pdb.gz") == "train/bm5/X_l_u.pdb.gz"
    assert m.match_file("/elsewhere/X_l_u.pdb.gz") is None  # ambiguous: two folders hold that name
    assert m.match_file("/copy/only.pdb.gz") == "train/ddg/only.pdb.gz"
    assert m.lookup("train/antibody/X_l_u.pdb.gz", "").cluster40 == "Q"


def test_cluster_split():
    none = np.zeros(300, np.int64)
    chains = Chains(files=[f"f{i}" for i in range(100)], file=np.repeat(np.arange(100), 3),
                    chain_id=np.array(["A", "B", "C"] * 100, dtype=object), offset=none, count=none,
                    cluster95=np.full(300, "", object), cluster40=np.array(["a", "a", "", "b", "", "c"] * 50, object),
                    manifest_n_res=none)
    keys = split_keys(chains)
    # An unlisted chain follows the first listed chain of its file; a file without any gets its own key.
    assert keys[2] == "a" and keys[4] == "b" and keys[5] == "c"
    chains.cluster40[:] = ""
    own = split_keys(chains)
    assert own[0] == "f0:A" and own[4] == "f1:B"
    many = np.array([f"k{i % 400}" for i in range(4000)], dtype=object)
    valid = cluster_split(many, 0.25, seed=3)
    for k in np.unique(many):  # whole clusters on one side
        assert len(set(valid[many == k])) == 1
    assert 0.15 < valid.mean() < 0.35
    np.testing.assert_array_equal(valid, cluster_split(many[::-1], 0.25, seed=3)[::-1])
    assert not np.array_equal(valid, cluster_split(many, 0.25, seed=4))
    assert not cluster_split(many, 0.0).any() and cluster_split(many, 1.0).all()
