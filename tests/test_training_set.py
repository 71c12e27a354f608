"""The training set's one reader (ldb_hpc.io.training_set) against its writer, the split by cluster, and the
training stage enum (ldb_hpc.model.stages) at its two edges: the CLI's words and a checkpoint's metadata.

:func:`write_training_set` is how the training tests make their data: through prepare's writer, so that they
train on the format the reader reads and not on a look-alike written by hand.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from ldb_hpc.chem import residues as rc
from ldb_hpc.errors import InputError
from ldb_hpc.io.parsed_file import ParsedFile
from ldb_hpc.io.sources import Manifest, ManifestEntry
from ldb_hpc.io.structure import ParseReport
from ldb_hpc.io.training_set import cluster_split, read_chains, read_training_set, split_keys, write_training_h5
from ldb_hpc.model.stages import Stage


def parsed(path: str, pos, mask, restype, segment, chain_id=None) -> ParsedFile:
    """A ParsedFile of arrays ([L, 14, 3] Å, [L, 14], [L], [L] 0-based within the file; chain ids default 'A')."""
    L = len(restype)
    restype = np.asarray(restype).astype(np.int8)
    return ParsedFile(path, True, report=ParseReport(path=path, n_models=1),
                      positions=np.asarray(pos, np.float32), mask=np.asarray(mask, bool), restype=restype,
                      resname=np.asarray([rc.RESTYPES_3[r] for r in restype]).astype("S5"),
                      resseq=np.arange(1, L + 1, dtype=np.int32), icode=np.full(L, b"", "S1"),
                      chain_id=np.asarray(chain_id if chain_id is not None else ["A"] * L, dtype=object),
                      segment=np.asarray(segment, np.int64))


def write_training_set(path, proteins, manifest: Manifest | None = None):
    """A training set at ``path`` from (pos, mask, restype, segment) arrays, one input file each (``p{k}.pdb``)."""
    files = [parsed(f"p{k}.pdb", *arrays) for k, arrays in enumerate(proteins)]
    write_training_h5(files, str(path), manifest=manifest, n_files=len(files))
    return path


def _protein(L: int, seed: int, segment=None):
    rng = np.random.default_rng(seed)
    restype = rng.integers(0, 21, L)
    mask = np.asarray(rc.SLOT_MASK)[restype] & (rng.random((L, 14)) > 0.1)
    pos = np.where(mask[..., None], rng.normal(size=(L, 14, 3)) * 10, 0.0).astype(np.float32)
    return pos, mask, restype, np.zeros(L, np.int64) if segment is None else np.asarray(segment)


def test_the_reader_returns_what_the_writer_wrote(tmp_path):
    a = _protein(7, 0, segment=[0, 0, 0, 1, 1, 2, 2])  # one file, three segments (two chain breaks)
    b = _protein(5, 1)
    files = [parsed("a.pdb", *a, chain_id=["A"] * 4 + ["B"] * 3), parsed("b.pdb", *b, chain_id=["C"] * 5)]
    manifest = Manifest([ManifestEntry("a.pdb", "A", 4, "c95|1", "c40|1"), ManifestEntry("b.pdb", "C", 9, "x", "y")])
    write_training_h5(files, str(tmp_path / "t.h5"), manifest=manifest, n_files=2)
    ts = read_training_set(str(tmp_path / "t.h5"))
    assert len(ts) == 12 and ts.path == str(tmp_path / "t.h5")
    np.testing.assert_array_equal(ts.positions, np.concatenate([a[0], b[0]]))
    np.testing.assert_array_equal(ts.mask, np.concatenate([a[1], b[1]]))
    np.testing.assert_array_equal(ts.restype, np.concatenate([a[2], b[2]]))
    assert ts.positions.dtype == np.float32 and ts.mask.dtype == bool
    assert ts.restype.dtype == ts.segment.dtype == ts.chains.offset.dtype == ts.chains.count.dtype == np.int64
    # Segment ids run on over files: a's three segments, then b's one.
    assert ts.segment.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3]
    assert ts.resname[:2].tolist() == [rc.RESTYPES_3[a[2][0]].encode(), rc.RESTYPES_3[a[2][1]].encode()]
    assert ts.resseq.tolist() == [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5]
    c = ts.chains
    assert c.files == ["a.pdb", "b.pdb"] and len(c) == 3
    assert c.chain_id.tolist() == ["A", "B", "C"] and c.file.tolist() == [0, 0, 1]
    assert c.offset.tolist() == [0, 4, 7] and c.count.tolist() == [4, 3, 5]
    assert c.cluster40.tolist() == ["c40|1", "", "y"] and c.cluster95.tolist() == ["c95|1", "", "x"]
    assert c.manifest_n_res.tolist() == [4, -1, 9]
    assert ts.chain_index.tolist() == [0] * 4 + [1] * 3 + [2] * 5 and ts.source.tolist() == [0] * 7 + [1] * 5
    assert c.rows(np.array([False, True, True])).tolist() == list(range(4, 12))
    assert c.rows(np.zeros(3, bool)).tolist() == []
    # The chains table alone reads the same.
    alone = read_chains(str(tmp_path / "t.h5"))
    assert alone.files == c.files and all(np.array_equal(getattr(alone, k), getattr(c, k))
                                          for k in ("file", "chain_id", "offset", "count", "cluster40"))


def test_the_reader_refuses_what_is_not_a_training_set(tmp_path):
    with pytest.raises(InputError, match=r"training data not found: .*nope.h5 \(make it with `ldb-hpc prepare`\)"):
        read_training_set(str(tmp_path / "nope.h5"))
    (tmp_path / "text.h5").write_text("not hdf5\n")
    with pytest.raises(InputError, match="not a training file from `ldb-hpc prepare`: .*text.h5"):
        read_training_set(str(tmp_path / "text.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:  # an HDF5 without the layout: named by what it lacks first
        f["coordinates"] = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(InputError, match="not a training file from `ldb-hpc prepare`: .*other.h5.*'positions'"):
        read_training_set(str(tmp_path / "other.h5"))
    with pytest.raises(InputError, match="not a training file from `ldb-hpc prepare`: .*other.h5"):
        read_chains(str(tmp_path / "other.h5"))


def test_split_keys_and_cluster_split_on_a_written_set(tmp_path):
    proteins = [_protein(3, k) for k in range(4)]
    files = [parsed(f"f{k}.pdb", *p, chain_id=["A", "B", "B"]) for k, p in enumerate(proteins)]
    manifest = Manifest([ManifestEntry("f0.pdb", "B", 2, "", "k1"), ManifestEntry("f1.pdb", "A", 1, "", "k1"),
                         ManifestEntry("f2.pdb", "A", 1, "", "k2")])
    write_training_h5(files, str(tmp_path / "s.h5"), manifest=manifest, n_files=4)
    chains = read_chains(str(tmp_path / "s.h5"))
    keys = split_keys(chains)
    # An unlisted chain takes its file's first listed cluster (f0 A → k1), else "file:chain" (f3).
    assert keys.tolist() == ["k1", "k1", "k1", "k1", "k2", "k2", "f3.pdb:A", "f3.pdb:B"]
    for seed in range(20):
        valid = cluster_split(keys, 0.5, seed=seed)
        assert valid[0] == valid[1] == valid[2] == valid[3] and valid[4] == valid[5]  # clusters never straddle
    rows = chains.rows(cluster_split(keys, 1.0))
    assert rows.tolist() == list(range(12))


def test_stage_words_are_the_cli_choices_and_the_stored_strings():
    assert Stage.words() == ("tokenizer", "diffusion", "refine", "placement")
    assert [Stage.parse(w) for w in Stage.words()] == [Stage.TOKENIZER, Stage.DIFFUSION, Stage.REFINE,
                                                        Stage.PLACEMENT]
    assert Stage.parse(Stage.REFINE) is Stage.REFINE
    with pytest.raises(ValueError):
        Stage.parse("Tokenizer")
    assert f"[{Stage.DIFFUSION}]" == "[diffusion]" and str(Stage.REFINE) == "refine"
    assert json.dumps({"stage": Stage.TOKENIZER.value}) == json.dumps({"stage": "tokenizer"})
    assert Stage.of_metadata({"stage": "refine", "step": 9000}) is Stage.REFINE
    assert Stage.of_metadata({}) is None and Stage.of_metadata({"stage": "distill"}) is None


def test_the_shipped_model_reads_its_stored_stage_into_the_enum():
    from ldb_hpc.model.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint

    stored = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["metadata"]["stage"]
    model = load_checkpoint(DEFAULT_MODEL_DIR)
    assert stored == "refine" and model.metadata["stage"] == "refine" and model.stage is Stage.REFINE


def test_train_config_takes_the_stage_as_a_word_or_a_member():
    from ldb_hpc.model.train import TrainConfig

    assert TrainConfig(stage="diffusion", data="d", out="o").stage is Stage.DIFFUSION
    assert TrainConfig(stage=Stage.REFINE, data="d", out="o").stage is Stage.REFINE
    with pytest.raises(ValueError):
        TrainConfig(stage="finetune", data="d", out="o")
