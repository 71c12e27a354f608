"""The training set of ``ldb-hpc prepare``: one HDF5 with every protein residue of a set of structures in atom14
slots. This module is its format: the layout below, the writer (:func:`write_training_h5`), the one reader
(:func:`read_training_set`, :func:`read_chains`) and the split of its chains by cluster.

Layout (one row per residue, N rows; C chains; F files; all arrays in chain order, file after file)::

    positions    [N, 14, 3] float32  Å, zeros where mask is False
    mask         [N, 14]    bool     atom present in the input
    restype      [N]        int8     index into RESTYPES_3 (attrs["restypes"]), UNK = 20
    resname      [N]        S5       residue name as in the file (before normalisation, e.g. HSD, MSE)
    resseq       [N]        int32    residue number from the file
    icode        [N]        S1       insertion code (b'' when none)
    chain_index  [N]        int32    row of the chains table
    segment      [N]        int32    global segment id: residues i and i+1 are peptide-bonded iff equal
    source       [N]        int32    index into files
    files        [F]        str      the input paths
    chains/file      [C] int32   index into files
    chains/chain_id  [C] str     chain identifier ('' when blank in the file)
    chains/offset    [C] int64   first residue row of the chain
    chains/count     [C] int32   residues of the chain
    chains/cluster95 [C] str     MMseqs2 95 % identity cluster from the manifest ('' when not listed)
    chains/cluster40 [C] str     40 % identity cluster ('' when not listed); split train/valid on this
    chains/manifest_n_res [C] int32  n_res of the manifest row (-1 when not listed)
    skipped/file, skipped/reason [S] str   inputs that could not be used and why

Only the first model of multi-model files is used (NMR ensembles would otherwise weigh one protein
many times). Per-residue datasets are chunked and gzip-compressed; the file is written under a
temporary name and renamed when complete. The inputs (structure files, MANIFEST.tsv) are found and read
by :mod:`ldb_hpc.io.sources` and parsed by :mod:`ldb_hpc.io.parsed_file`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ldb_hpc.chem.residues import ATOM14, NUM_SLOTS, RESTYPES_3
from ldb_hpc.errors import InputError, OutputError
from ldb_hpc.io.files import temp_name
from ldb_hpc.io.sources import Manifest
from ldb_hpc.io.structure import ParseReport

FORMAT_NAME = "ldb-hpc-training"
FORMAT_VERSION = 1
CHUNK_ROWS = 4096


# ----------------------------------------------------------------------------------------------------
# Writing


@dataclass
class PrepareSummary:
    """Totals of a prepare run (what went in, what was kept, what was left out and why)."""

    files_in: int = 0
    files_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    multi_model_files: int = 0
    chains: int = 0
    residues: int = 0
    report: ParseReport = field(default_factory=ParseReport)
    chains_in_manifest: int = 0
    chains_not_in_manifest: list[str] = field(default_factory=list)  # "path:chain"
    chains_n_res_differ: int = 0
    manifest_rows_unused: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        """A plain-text summary table (for stdout)."""
        r = self.report
        rows = [
            ("files given", self.files_in),
            ("files read", self.files_read),
            ("files skipped", len(self.skipped)),
            ("multi-model files (first model used)", self.multi_model_files),
            ("chains kept", self.chains),
            ("segments (chain pieces between breaks)", r.segments),
            ("residues kept", self.residues),
            ("  of them unknown names kept as UNK", sum(r.unknown_as_unk.values())),
            ("  of them mapped with --map-residue", sum(r.mapped.values())),
        ]
        rows += [(f"residues skipped: {k}", v) for k, v in sorted(r.residues_skipped.items())]
        rows += [(f"non-protein residues ignored: {k}", v) for k, v in sorted(r.residues_ignored.items())]
        rows += [(f"atoms ignored: {k}", v) for k, v in sorted(r.atoms_ignored.items())]
        rows.append(("heavy atoms missing (masked)", r.atoms_missing))
        if self.chains_in_manifest or self.chains_not_in_manifest:
            rows += [
                ("chains with a manifest row", self.chains_in_manifest),
                ("chains without a manifest row", len(self.chains_not_in_manifest)),
                ("chains whose residue count differs from manifest n_res", self.chains_n_res_differ),
                ("manifest rows of read files not found in them", self.manifest_rows_unused),
            ]
        rows.append(("seconds", f"{self.seconds:.1f}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v:>10,}" if isinstance(v, int) else f"{k:<{width}}  {v:>10}" for k, v in rows]
        if r.unknown_as_unk:
            lines.append("unknown residue names kept as UNK: "
                         + ", ".join(f"{k} {v}" for k, v in r.unknown_as_unk.most_common()))
        for path, reason in self.skipped:
            lines.append(f"skipped {path}: {reason}")
        if self.chains_not_in_manifest:
            shown = self.chains_not_in_manifest[:10]
            more = len(self.chains_not_in_manifest) - len(shown)
            lines.append("chains without a manifest row: " + ", ".join(shown) + (f" (+{more} more)" if more else ""))
        return "\n".join(lines)


class _Appender:
    """Resizable, chunked, compressed 1-D+ datasets appended to in blocks."""

    def __init__(self, h5, name, shape_tail, dtype, compression):
        self.ds = h5.create_dataset(name, shape=(0, *shape_tail), maxshape=(None, *shape_tail), dtype=dtype,
                                    chunks=(CHUNK_ROWS, *shape_tail), compression=compression,
                                    shuffle=compression is not None)
        self.parts: list[np.ndarray] = []
        self.pending = 0

    def add(self, arr):
        self.parts.append(arr)
        self.pending += len(arr)
        if self.pending >= 16 * CHUNK_ROWS:
            self.flush()

    def flush(self):
        if not self.parts:
            return
        block = np.concatenate(self.parts)
        n0 = self.ds.shape[0]
        self.ds.resize(n0 + len(block), axis=0)
        self.ds[n0:] = block
        self.parts, self.pending = [], 0


def write_training_h5(results, out_path: str, *, manifest: Manifest | None = None, n_files: int,
                      compression: str = "gzip", progress=None, attrs: dict | None = None) -> PrepareSummary:
    """Stream parsed files into the training HDF5 at ``out_path`` (written to a temp name, then renamed).

    results: iterable of :class:`ldb_hpc.io.parsed_file.ParsedFile` in output order. Raises InputError when no
    residue at all could be kept (nothing is left at ``out_path`` then); OutputError when it cannot be written.
    """
    import time

    import h5py

    t0 = time.perf_counter()
    summary = PrepareSummary(files_in=n_files)
    tmp = temp_name(os.path.abspath(out_path))
    comp = None if compression in (None, "none") else compression
    try:
        with h5py.File(tmp, "w") as h5:
            cols = {
                "positions": _Appender(h5, "positions", (NUM_SLOTS, 3), np.float32, comp),
                "mask": _Appender(h5, "mask", (NUM_SLOTS,), bool, comp),
                "restype": _Appender(h5, "restype", (), np.int8, comp),
                "resname": _Appender(h5, "resname", (), "S5", comp),
                "resseq": _Appender(h5, "resseq", (), np.int32, comp),
                "icode": _Appender(h5, "icode", (), "S1", comp),
                "chain_index": _Appender(h5, "chain_index", (), np.int32, comp),
                "segment": _Appender(h5, "segment", (), np.int32, comp),
                "source": _Appender(h5, "source", (), np.int32, comp),
            }
            files: list[str] = []
            ch_file, ch_id, ch_off, ch_count, ch_c95, ch_c40, ch_nres = [], [], [], [], [], [], []
            n_rows = n_seg = 0
            for res in results:
                if progress is not None:
                    progress.update(1)
                if not res.ok:
                    summary.skipped.append((res.path, res.reason))
                    continue
                fi = len(files)
                files.append(res.path)
                summary.files_read += 1
                summary.report.merge(res.report)
                summary.multi_model_files += res.report.n_models > 1
                n = len(res.restype)
                # Chains = runs of equal chain id in residue order.
                cid = res.chain_id
                starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
                counts = np.diff(np.r_[starts, n])
                chain_rows = np.repeat(np.arange(len(starts)) + len(ch_file), counts)
                mfile = manifest.match_file(res.path) if manifest is not None else None
                seen_chains = set()
                for s, c in zip(starts, counts):
                    chain = str(cid[s])
                    seen_chains.add(chain)
                    entry = manifest.lookup(mfile, chain) if manifest is not None else None
                    ch_file.append(fi)
                    ch_id.append(chain)
                    ch_off.append(n_rows + int(s))
                    ch_count.append(int(c))
                    ch_c95.append(entry.cluster95 if entry else "")
                    ch_c40.append(entry.cluster40 if entry else "")
                    ch_nres.append(entry.n_res if entry else -1)
                    if manifest is not None:
                        if entry is None:
                            summary.chains_not_in_manifest.append(f"{res.path}:{chain}")
                        else:
                            summary.chains_in_manifest += 1
                            summary.chains_n_res_differ += entry.n_res != int(c)
                if mfile is not None:
                    summary.manifest_rows_unused += len(set(manifest.chains_of(mfile)) - seen_chains)
                cols["positions"].add(res.positions)
                cols["mask"].add(res.mask)
                cols["restype"].add(res.restype)
                cols["resname"].add(res.resname)
                cols["resseq"].add(res.resseq)
                cols["icode"].add(res.icode)
                cols["chain_index"].add(chain_rows.astype(np.int32))
                cols["segment"].add((res.segment + n_seg).astype(np.int32))
                cols["source"].add(np.full(n, fi, dtype=np.int32))
                n_rows += n
                n_seg += int(res.segment.max()) + 1
            for c in cols.values():
                c.flush()
            if n_rows == 0:
                reasons = "; ".join(r for _, r in summary.skipped[:3])
                raise InputError(f"no protein residues in any of the {n_files} input file(s)"
                                 + (f": {reasons}" if reasons else ""))
            summary.chains, summary.residues = len(ch_file), n_rows
            s = h5py.string_dtype()
            h5.create_dataset("files", data=np.asarray(files, dtype=object), dtype=s)
            g = h5.create_group("chains")
            g.create_dataset("file", data=np.asarray(ch_file, dtype=np.int32))
            g.create_dataset("chain_id", data=np.asarray(ch_id, dtype=object), dtype=s)
            g.create_dataset("offset", data=np.asarray(ch_off, dtype=np.int64))
            g.create_dataset("count", data=np.asarray(ch_count, dtype=np.int32))
            g.create_dataset("cluster95", data=np.asarray(ch_c95, dtype=object), dtype=s)
            g.create_dataset("cluster40", data=np.asarray(ch_c40, dtype=object), dtype=s)
            g.create_dataset("manifest_n_res", data=np.asarray(ch_nres, dtype=np.int32))
            sk = h5.create_group("skipped")
            sk.create_dataset("file", data=np.asarray([p for p, _ in summary.skipped], dtype=object), dtype=s)
            sk.create_dataset("reason", data=np.asarray([r for _, r in summary.skipped], dtype=object), dtype=s)
            h5.attrs["format"] = FORMAT_NAME
            h5.attrs["version"] = FORMAT_VERSION
            h5.attrs["units"] = "angstrom"
            h5.attrs["restypes"] = json.dumps(list(RESTYPES_3))
            h5.attrs["atom14"] = json.dumps({k: list(v) for k, v in ATOM14.items()})
            h5.attrs["models"] = "first model of each file"
            h5.attrs["manifest"] = manifest.path if manifest is not None else ""
            h5.attrs["summary"] = json.dumps(_summary_dict(summary))
            for k, v in (attrs or {}).items():
                h5.attrs[k] = v
        os.replace(tmp, out_path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"cannot write {out_path}: {exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    summary.seconds = time.perf_counter() - t0
    return summary


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _summary_dict(s: PrepareSummary) -> dict:
    r = s.report
    return {
        "files_in": s.files_in, "files_read": s.files_read, "files_skipped": len(s.skipped),
        "multi_model_files": s.multi_model_files, "chains": s.chains, "residues": s.residues,
        "segments": r.segments, "residues_skipped": dict(r.residues_skipped),
        "residues_ignored": dict(r.residues_ignored), "unknown_as_unk": dict(r.unknown_as_unk),
        "mapped": dict(r.mapped), "atoms_ignored": dict(r.atoms_ignored), "atoms_missing": r.atoms_missing,
        "chains_in_manifest": s.chains_in_manifest, "chains_not_in_manifest": len(s.chains_not_in_manifest),
    }


# ----------------------------------------------------------------------------------------------------
# Reading and splitting


@dataclass(frozen=True)
class Chains:
    """The chains table of a training set (C rows, in residue order) and the F input files it points into."""

    files: list[str]  # [F] the input paths
    file: np.ndarray  # [C] int32 index into files
    chain_id: np.ndarray  # [C] str ('' when blank in the file)
    offset: np.ndarray  # [C] int64 first residue row of the chain
    count: np.ndarray  # [C] int64 residues of the chain
    cluster95: np.ndarray  # [C] str, '' when the manifest does not list the chain
    cluster40: np.ndarray  # [C] str, '' when not listed; the split is by this
    manifest_n_res: np.ndarray  # [C] int32, -1 when not listed

    def __len__(self) -> int:
        return len(self.offset)

    def rows(self, select: np.ndarray) -> np.ndarray:
        """[R] int64: the residue rows of the chains where ``select`` ([C] bool) is True, in order."""
        parts = [np.arange(o, o + n) for o, n in zip(self.offset[select], self.count[select])]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class TrainingSet:
    """A whole training set in memory (numpy); the per-residue arrays have one row per residue (N)."""

    path: str
    chains: Chains
    positions: np.ndarray  # [N, 14, 3] float32 Å, zeros where mask is False
    mask: np.ndarray  # [N, 14] bool
    restype: np.ndarray  # [N] int64 index into RESTYPES_3
    resname: np.ndarray  # [N] S5 as in the file
    resseq: np.ndarray  # [N] int32
    icode: np.ndarray  # [N] S1
    chain_index: np.ndarray  # [N] int32 row of the chains table
    segment: np.ndarray  # [N] int64: residues i and i+1 are peptide-bonded iff equal
    source: np.ndarray  # [N] int32 index into chains.files

    def __len__(self) -> int:
        return len(self.restype)


def _open(path: str):
    """The open HDF5 file of a training set; InputError (the words of ``ldb-hpc train``) when there is none."""
    import h5py

    if not os.path.exists(path):
        raise InputError(f"training data not found: {path} (make it with `ldb-hpc prepare`)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a training file from `ldb-hpc prepare`: {path} ({exc})") from None


def _chains(h5) -> Chains:
    offset, count = h5["chains/offset"][:].astype(np.int64), h5["chains/count"][:].astype(np.int64)
    g = h5["chains"]
    return Chains(files=h5["files"].asstr()[:].tolist(), file=g["file"][:], chain_id=g["chain_id"].asstr()[:],
                  offset=offset, count=count, cluster95=g["cluster95"].asstr()[:], cluster40=g["cluster40"].asstr()[:],
                  manifest_n_res=g["manifest_n_res"][:])


def read_chains(path: str) -> Chains:
    """The chains table of the training set at ``path`` (no residue arrays: quick, e.g. for a split)."""
    with _open(path) as h5:
        try:
            return _chains(h5)
        except (OSError, KeyError) as exc:
            raise InputError(f"not a training file from `ldb-hpc prepare`: {path} ({exc})") from None


def read_training_set(path: str) -> TrainingSet:
    """The training set at ``path``, every array in memory. InputError when the file is missing, or is not an
    HDF5 with the datasets of the layout above."""
    with _open(path) as h5:
        try:  # what training needs first, so that a file without it is named by the first dataset it lacks
            return TrainingSet(
                path=path, positions=h5["positions"][:].astype(np.float32, copy=False),
                mask=h5["mask"][:].astype(bool, copy=False), restype=h5["restype"][:].astype(np.int64),
                segment=h5["segment"][:].astype(np.int64), chains=_chains(h5), resname=h5["resname"][:],
                resseq=h5["resseq"][:], icode=h5["icode"][:], chain_index=h5["chain_index"][:], source=h5["source"][:])
        except (OSError, KeyError) as exc:
            raise InputError(f"not a training file from `ldb-hpc prepare`: {path} ({exc})") from None


def split_keys(chains: Chains) -> np.ndarray:
    """[C] str: the cluster a chain is split by.

    cluster40 from the manifest; a chain without one takes the cluster40 of the first chain of the
    same file that has one (peptides bound to a listed protein go with it), else ``file:chain``.
    """
    c40 = np.asarray(chains.cluster40, dtype=object)
    fidx = np.asarray(chains.file)
    keys = c40.copy()
    first = {}
    for i in range(len(c40)):
        if c40[i] and fidx[i] not in first:
            first[fidx[i]] = c40[i]
    for i in np.flatnonzero(c40 == ""):
        keys[i] = first.get(fidx[i], f"{chains.files[fidx[i]]}:{chains.chain_id[i]}")
    return keys


def cluster_split(keys, valid_fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    """[C] bool, True = validation: whole clusters go to one side, by a seeded hash of the cluster key.

    keys: [C] cluster keys (see :func:`split_keys`). The assignment of a cluster depends only on
    its key and ``seed``, not on which other files were prepared or their order.
    """
    if not 0.0 <= valid_fraction <= 1.0:
        raise InputError(f"valid fraction must be within 0..1, got {valid_fraction}")
    keys = np.asarray(keys, dtype=object)
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "little")
                  for k in uniq], dtype=np.float64) / 2.0 ** 64
    return (u < valid_fraction)[inv]


__all__ = [
    "CHUNK_ROWS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Chains",
    "PrepareSummary",
    "TrainingSet",
    "cluster_split",
    "read_chains",
    "read_training_set",
    "split_keys",
    "write_training_h5",
]
