"""Structural metrics of backmapped structures (DESIGN.md "Definitions of the metrics"), batched.

Inputs are atom14 arrays in Å (numpy or torch): predictions ``pred [N, L, 14, 3]`` (N rows = F frames × S samples,
frame-major: row r belongs to frame r // S), references ``ref [L, 14, 3]`` (one structure for every row) or
``ref [F, L, 14, 3]``, atom masks ``[L, 14]`` bool (an atom present in that file), ``restype [L]`` and
``segment [L]`` (``Residues.segment``: peptide bonds join consecutive residues of one segment).

Definitions used here:

* ``rmsd``: heavy atoms present in both pred and ref, no superposition, Å; ``rmsd_backbone``: N, CA, C, O only.
* ``bond_outliers``: share of the topology bonds (intra-residue ``BONDS`` + peptide C(i)–N(i+1) within a segment,
  both atoms present in pred) whose length differs from the ideal one by more than 0.1 Å.
* ``clash_1.2`` / ``clash_2.0``: pairs of present heavy atoms closer than 1.2 Å / 2.0 Å that are neither 1-2 nor
  1-3 pairs of the topology (bonds and angles, peptide bond included), per 1000 present atoms; each pair counted
  once. One rule, no exemption: a Cys SG–SG pair is a bond only when the topology bonds it (``disulfides``: the
  output's SSBOND/CONECT or topology bonds) and it lies at 1.9–2.2 Å; every other pair, SG–SG included, is a
  clash candidate. A bonded SG–SG is a topology bond (bond outliers, the graph and 1-3 exclusions count it).
* ``chi1_accuracy``: share of residues with χ1 (measurable in both) whose χ1 is within 40° of the reference;
  ``chi12_accuracy``: share of residues with χ1 and χ2 whose χ1 and χ2 are both within 40°. χ angles that are
  π-periodic (ASP χ2, GLU χ3, PHE χ2, TYR χ2) are compared modulo 180°. NaN for a row without such residues.
* ``graph_valid``: 1.0 when the distance-inferred bond graph of the row (present atoms closer than
  1.3 × (r_i + r_j), covalent radii ``COVALENT_RADIUS``) equals the topology's bond set on present atoms, else 0.0;
  its mean is the share of valid frames.
* Diversity, per frame with S ≥ 2 samples (atoms present in both pred and ref):
  ``rmsd_gen`` = mean RMSD over the S(S−1)/2 pairs of samples of the frame (DiAMoNDBack's mean pairwise RMSD),
  ``rmsd_ref`` = mean RMSD of the S samples to the reference frame, ``div`` = 1 − rmsd_gen / rmsd_ref (LDB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ldb_hpc.chem.residues import (
    BOND_MASK,
    BOND_SLOTS,
    CHI_MASK,
    CHI_PI_PERIODIC_MASK,
    COVALENT_RADIUS,
    NUM_SLOTS,
    RESTYPE_INDEX,
    RESTYPES_3,
    SLOT_ELEMENT,
    SLOT_INDEX,
    SLOT_MASK,
)

BOND_TOLERANCE = 0.1  # Å
CLASH_CUTOFFS = (1.2, 2.0)  # Å
CHI_TOLERANCE = math.radians(40.0)
GRAPH_FACTOR = 1.3

_RADIUS = np.vectorize(lambda e: COVALENT_RADIUS.get(e, 0.0))(SLOT_ELEMENT).astype(np.float64)  # [21, 14]
_SG = SLOT_INDEX[("CYS", "SG")]
SS_IDEAL = 2.04  # Å: SG–SG of a disulfide
SS_BONDED = (1.9, 2.2)  # Å: a topology SG–SG bond counts as one only at this length
_CYS = RESTYPE_INDEX["CYS"]

ROW_METRICS = ("rmsd", "rmsd_backbone", "bond_outliers", "clash_1.2", "clash_2.0", "chi1_accuracy",
               "chi12_accuracy", "graph_valid")
FRAME_METRICS = ("rmsd_gen", "rmsd_ref", "div")
UNITS = {"rmsd": "Å", "rmsd_backbone": "Å", "bond_outliers": "fraction", "clash_1.2": "per 1000 atoms",
         "clash_2.0": "per 1000 atoms", "chi1_accuracy": "fraction", "chi12_accuracy": "fraction",
         "graph_valid": "fraction", "rmsd_gen": "Å", "rmsd_ref": "Å", "div": "1"}


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(dtype)


@dataclass
class Topology:
    """Bonds and 1-2/1-3 exclusions of one protein as flat atom indices (atom a = residue · 14 + slot).

    bonds  [B, 2] int64: topology bonds, both atoms present (intra-residue, then peptide bonds)
    bond_ideal [B] float64: ideal lengths in Å (NaN when no ideal table was given)
    key12, key13: sorted int64 keys a·A + b (a < b, A = 14 L) of all 1-2 and 1-3 pairs of the topology
    radius [A] float64 covalent radius per atom (Å); present [A] bool
    key_ss: sorted int64 keys of the SG–SG pairs the topology bonds (disulfides)
    """

    bonds: np.ndarray
    bond_ideal: np.ndarray
    key12: np.ndarray
    key13: np.ndarray
    radius: np.ndarray
    present: np.ndarray
    key_ss: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.present.size)


def build_topology(restype, segment, mask, ideal_bond=None, ideal_peptide=None, disulfides=()) -> Topology:
    """Topology of L residues: restype [L] int, segment [L] int, mask [L, 14] bool (atoms present);
    ideal_bond [21, max_bonds] Å (``BOND_SLOTS`` order) and ideal_peptide (Å) are optional; disulfides: residue
    index pairs of Cys bonded SG–SG (ideal length SS_IDEAL)."""
    restype = np.asarray(restype, dtype=np.int64)
    segment = np.asarray(segment, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool) & SLOT_MASK[restype]
    L = restype.shape[0]
    A = L * NUM_SLOTS
    res = np.arange(L)
    # All topology bonds (on existing slots, present or not), for the exclusions.
    bm = BOND_MASK[restype]  # [L, K]
    pairs = BOND_SLOTS[restype] + (res * NUM_SLOTS)[:, None, None]  # [L, K, 2]
    intra = pairs[bm]
    ideal_intra = (np.asarray(ideal_bond, dtype=np.float64)[restype][bm] if ideal_bond is not None
                   else np.full(len(intra), np.nan))
    link = np.nonzero(segment[1:] == segment[:-1])[0]
    pep = np.stack([link * NUM_SLOTS + 2, (link + 1) * NUM_SLOTS + 0], axis=1).reshape(-1, 2)
    ideal_pep = np.full(len(pep), np.nan if ideal_peptide is None else float(ideal_peptide))
    ss = np.asarray([(i * NUM_SLOTS + _SG, j * NUM_SLOTS + _SG) for i, j in disulfides
                     if restype[i] == _CYS and restype[j] == _CYS], dtype=np.int64).reshape(-1, 2)
    ideal_ss = np.full(len(ss), np.nan if ideal_bond is None else SS_IDEAL)
    all_bonds = np.concatenate([intra.reshape(-1, 2), pep, ss]).astype(np.int64)
    all_ideal = np.concatenate([ideal_intra, ideal_pep, ideal_ss])

    flat_present = mask.reshape(-1)
    keep = flat_present[all_bonds[:, 0]] & flat_present[all_bonds[:, 1]]

    lo, hi = all_bonds.min(1), all_bonds.max(1)
    key12 = np.unique(lo * A + hi)
    # 1-3 pairs: two neighbours of one centre atom. Neighbour table [A, 4] (heavy atoms have <= 4 bonds).
    directed = np.concatenate([all_bonds, all_bonds[:, ::-1]])
    directed = directed[np.argsort(directed[:, 0], kind="stable")]
    if len(directed):
        start = np.searchsorted(directed[:, 0], directed[:, 0], side="left")
        rank = np.arange(len(directed)) - start
        width = int(rank.max()) + 1
    else:
        rank, width = np.zeros(0, dtype=np.int64), 1
    nbr = np.full((A, width), -1, dtype=np.int64)
    nbr[directed[:, 0], rank] = directed[:, 1]
    i, j = np.triu_indices(width, k=1)
    u, v = nbr[:, i].reshape(-1), nbr[:, j].reshape(-1)
    ok = (u >= 0) & (v >= 0)
    u, v = u[ok], v[ok]
    key13 = np.unique(np.minimum(u, v) * A + np.maximum(u, v))

    radius = _RADIUS[restype].reshape(-1)
    key_ss = np.unique(ss.min(1) * A + ss.max(1))
    return Topology(bonds=all_bonds[keep], bond_ideal=all_ideal[keep], key12=key12, key13=key13,
                    radius=radius, present=flat_present, key_ss=key_ss)


def ideal_bonds_from(positions, mask, restype, segment) -> tuple[np.ndarray, float]:
    """Median bond lengths measured on structures (a fallback when no ideal table is available).

    positions [F, L, 14, 3] or [L, 14, 3] Å; mask [L, 14]; restype [L]; segment [L]. Returns
    (ideal_bond [21, max_bonds] Å, NaN where never observed; ideal_peptide Å, NaN if no peptide bond).
    """
    x = np.asarray(positions, dtype=np.float64).reshape(-1, len(restype) * NUM_SLOTS, 3)
    restype = np.asarray(restype, dtype=np.int64)
    out = np.full(BOND_MASK.shape, np.nan)
    mask = np.asarray(mask, dtype=bool)
    bm = BOND_MASK[restype] & np.take_along_axis(mask, BOND_SLOTS[restype][..., 0], 1) \
        & np.take_along_axis(mask, BOND_SLOTS[restype][..., 1], 1)
    base = (np.arange(len(restype)) * NUM_SLOTS)[:, None]
    d = np.linalg.norm(x[:, BOND_SLOTS[restype][..., 0] + base] - x[:, BOND_SLOTS[restype][..., 1] + base], axis=-1)
    for r in np.unique(restype):
        for k in range(BOND_MASK.shape[1]):
            sel = (restype == r) & bm[:, k]
            if sel.any():
                out[r, k] = float(np.median(d[:, sel, k]))
    link = np.nonzero((np.asarray(segment)[1:] == np.asarray(segment)[:-1]) & mask[:-1, 2] & mask[1:, 0])[0]
    pep = np.linalg.norm(x[:, link * NUM_SLOTS + 2] - x[:, (link + 1) * NUM_SLOTS], axis=-1)
    return out, (float(np.median(pep)) if pep.size else float("nan"))


def rmsd(pred, ref, mask, slots=None) -> np.ndarray:
    """RMSD without superposition. pred [N, L, 14, 3], ref [N or 1, L, 14, 3] Å, mask [L, 14] bool (atoms to use);
    slots: optional list of slot indices (e.g. [0, 1, 2, 3] for the backbone). Returns [N] Å (NaN if no atom)."""
    x, y = _t(pred, torch.float64), _t(ref, torch.float64)
    m = _t(mask, torch.bool).clone()
    if slots is not None:
        keep = torch.zeros(NUM_SLOTS, dtype=torch.bool)
        keep[list(slots)] = True
        m &= keep
    sq = ((x - y) ** 2).sum(-1)  # [N, L, 14]
    n = m.sum()
    return torch.sqrt((sq * m).sum((-2, -1)) / n).numpy() if n > 0 else np.full(x.shape[0], np.nan)


def bond_lengths(pred, topo: Topology) -> np.ndarray:
    """Lengths of the topology bonds: pred [N, L, 14, 3] Å → [N, B] Å."""
    x = _t(pred, torch.float64).reshape(pred.shape[0], -1, 3)
    b = torch.as_tensor(topo.bonds)
    return (x[:, b[:, 0]] - x[:, b[:, 1]]).norm(dim=-1).numpy()


def close_pairs(pred, mask, cutoff: float, max_floats: int = 1 << 22):
    """All pairs of present atoms closer than ``cutoff`` (Å), each once, with a residue-level prefilter.

    pred [N, L, 14, 3] Å; mask [L, 14] bool. Memory is bounded by ``max_floats`` per step (never N·(14L)²).
    Returns (row [P], a [P], b [P] flat atom indices with a < b, d [P] Å) as numpy arrays.
    """
    x = _t(pred, torch.float32)
    m = _t(mask, torch.bool)
    N, L = x.shape[:2]
    mf = m.to(x.dtype)
    count = mf.sum(-1)  # [L]
    has = count > 0
    centre = (x * mf[..., None]).sum(-2) / count.clamp(min=1)[:, None]  # [N, L, 3]
    radius = torch.where(m, (x - centre[:, :, None]).norm(dim=-1), torch.zeros(())).amax(-1)  # [N, L]
    out = ([], [], [], [])
    tri = torch.triu(torch.ones(NUM_SLOTS, NUM_SLOTS, dtype=torch.bool), diagonal=1)
    block = max(1, max_floats // max(1, N * L))
    atom_chunk = max(1, max_floats // (NUM_SLOTS * NUM_SLOTS))
    for i0 in range(0, L, block):
        i1 = min(L, i0 + block)
        dc = torch.cdist(centre[:, i0:i1], centre)  # [N, B, L]
        cand = dc <= radius[:, i0:i1, None] + radius[:, None, :] + cutoff
        cand &= (torch.arange(i0, i1)[:, None] <= torch.arange(L)[None, :]) & has[i0:i1, None] & has[None, :]
        f, i, j = cand.nonzero(as_tuple=True)
        i = i + i0
        for k0 in range(0, f.numel(), atom_chunk):
            fk, ik, jk = f[k0:k0 + atom_chunk], i[k0:k0 + atom_chunk], j[k0:k0 + atom_chunk]
            d = torch.cdist(x[fk, ik], x[fk, jk])  # [K, 14, 14]
            ok = (d < cutoff) & m[ik][:, :, None] & m[jk][:, None, :]
            ok &= (ik != jk)[:, None, None] | tri
            k, sa, sb = ok.nonzero(as_tuple=True)
            out[0].append(fk[k])
            out[1].append(ik[k] * NUM_SLOTS + sa)
            out[2].append(jk[k] * NUM_SLOTS + sb)
            out[3].append(d[k, sa, sb])
    if not out[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(torch.cat(v).numpy() for v in out)


def _pair_kinds(a: np.ndarray, b: np.ndarray, d: np.ndarray, topo: Topology):
    """(is12, covalent, disulfide, nonbonded) flags [P] of atom pairs a < b at distances d (Å): is12 the topology's
    bonds (for the bond graph), nonbonded the clash candidates of DESIGN.md (neither 1-2 nor 1-3), where a topology
    SG–SG bond counts as 1-2 only at ``SS_BONDED`` (1.9–2.2 Å): outside it the pair is a candidate like any
    other."""
    key = a.astype(np.int64) * topo.n_atoms + b
    is12 = np.isin(key, topo.key12, assume_unique=False)
    is13 = np.isin(key, topo.key13, assume_unique=False)
    covalent = d < GRAPH_FACTOR * (topo.radius[a] + topo.radius[b])
    ss = np.isin(key, topo.key_ss)
    disulfide = ss & (d >= SS_BONDED[0]) & (d <= SS_BONDED[1])
    return is12, covalent, disulfide, ~(is12 & (~ss | disulfide)) & ~is13


def clashing_pairs(pred, topo: Topology, cutoff: float = CLASH_CUTOFFS[0]):
    """The non-bonded pairs (DESIGN.md's clash definition) closer than ``cutoff`` Å. pred [N, L, 14, 3] Å.
    Returns (row [P], a [P], b [P] flat atom indices residue·14 + slot, a < b, d [P] Å) as numpy arrays."""
    row, a, b, d = close_pairs(pred, topo.present.reshape(-1, NUM_SLOTS), cutoff)
    keep = _pair_kinds(a, b, d, topo)[3]
    return row[keep], a[keep], b[keep], d[keep]


def pair_metrics(pred, topo: Topology) -> dict[str, np.ndarray]:
    """Clashes per 1000 atoms and graph validity per row. pred [N, L, 14, 3] Å. Returns {'clash_1.2', 'clash_2.0',
    'graph_valid', 'graph_extra' (non-topology covalent contacts), 'graph_missing' (stretched bonds)}, each [N]."""
    N = pred.shape[0]
    present = topo.present.reshape(-1, NUM_SLOTS)
    graph_cut_max = GRAPH_FACTOR * 2 * max(COVALENT_RADIUS.values())
    row, a, b, d = close_pairs(pred, present, max(max(CLASH_CUTOFFS), graph_cut_max))
    is12, covalent, disulfide, nonbonded = _pair_kinds(a, b, d, topo)
    n_atoms = max(1, int(topo.present.sum()))
    out = {}
    for cut in CLASH_CUTOFFS:
        out[f"clash_{cut}"] = np.bincount(row[nonbonded & (d < cut)], minlength=N) * 1000.0 / n_atoms
    extra = np.bincount(row[covalent & ~is12 & ~disulfide], minlength=N)
    lengths = bond_lengths(pred, topo)
    cut_b = GRAPH_FACTOR * (topo.radius[topo.bonds[:, 0]] + topo.radius[topo.bonds[:, 1]])
    missing = (~(lengths < cut_b)).sum(-1)
    out["graph_valid"] = ((extra == 0) & (missing == 0)).astype(np.float64)
    out["graph_extra"] = extra.astype(np.int64)
    out["graph_missing"] = missing.astype(np.int64)
    return out


def bond_outliers(pred, topo: Topology, tolerance: float = BOND_TOLERANCE) -> np.ndarray:
    """Share of topology bonds whose length is more than ``tolerance`` Å from ideal: pred [N, L, 14, 3] → [N].
    Needs a topology built with ideal lengths; bonds without an ideal value (NaN) are an error."""
    if np.isnan(topo.bond_ideal).any():
        raise ValueError("bond_outliers needs ideal lengths for every bond "
                         "(build_topology(ideal_bond=, ideal_peptide=))")
    if len(topo.bonds) == 0:
        return np.full(pred.shape[0], np.nan)
    return (np.abs(bond_lengths(pred, topo) - topo.bond_ideal) > tolerance).mean(-1)


def chi_matches(pred, ref, pred_mask, ref_mask, restype, tolerance: float = CHI_TOLERANCE) -> dict[str, np.ndarray]:
    """Per residue and row: which χ1 (and χ1+χ2) are defined in both and within ``tolerance`` rad of the reference.
    pred [N, L, 14, 3], ref [N or 1, L, 14, 3] Å; masks [L, 14]; restype [L]. Returns bool arrays [N, L]
    'has1', 'good1', 'has12', 'good12' (π-periodic χ of symmetric side chains compared modulo π)."""
    from ldb_hpc.geometry.builder import measure_torsions

    rt = torch.as_tensor(np.asarray(restype), dtype=torch.long)
    tp, mp = measure_torsions(_t(pred, torch.float64), rt, _t(pred_mask, torch.bool))
    tr, mr = measure_torsions(_t(ref, torch.float64), rt, _t(ref_mask, torch.bool))
    diff = torch.remainder(tp - tr + math.pi, 2 * math.pi) - math.pi
    diff = diff.abs()[..., 1:3]  # χ1, χ2: [N, L, 2]
    pi_periodic = torch.as_tensor(CHI_PI_PERIODIC_MASK[np.asarray(restype)][:, :2])
    diff = torch.where(pi_periodic, torch.minimum(diff, math.pi - diff), diff)
    both = (mp & mr)[..., 1:3]
    good = diff <= tolerance
    has1 = both[..., 0]
    has12 = both[..., 0] & both[..., 1] & torch.as_tensor(CHI_MASK[np.asarray(restype), 1])
    return {"has1": has1.numpy(), "good1": (good[..., 0] & has1).numpy(), "has12": has12.numpy(),
            "good12": (good[..., 0] & good[..., 1] & has12).numpy()}


def chi_accuracy(pred, ref, pred_mask, ref_mask, restype, tolerance: float = CHI_TOLERANCE):
    """χ accuracy per row. pred [N, L, 14, 3], ref [N or 1, L, 14, 3] Å; masks [L, 14]; restype [L].
    Returns (chi1 [N], chi12 [N]) shares in [0, 1] (NaN when no residue has the angle(s) in both)."""
    m = chi_matches(pred, ref, pred_mask, ref_mask, restype, tolerance)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m["good1"].sum(-1) / m["has1"].sum(-1).astype(np.float64),
                m["good12"].sum(-1) / m["has12"].sum(-1).astype(np.float64))


def chi_by_residue_type(pred, ref, pred_mask, ref_mask, restype, tolerance: float = CHI_TOLERANCE) -> dict:
    """χ1 and χ1+χ2 accuracy pooled over all rows per residue type: {name: {'n1', 'chi1', 'n12', 'chi12'}} for the
    types that have χ1 in both (shares in [0, 1]; chi12 None without χ2)."""
    m = chi_matches(pred, ref, pred_mask, ref_mask, restype, tolerance)
    rt = np.broadcast_to(np.asarray(restype), m["has1"].shape)
    out = {}
    for t in np.unique(rt[m["has1"]]):
        sel = rt == t
        n1, n12 = int((m["has1"] & sel).sum()), int((m["has12"] & sel).sum())
        out[RESTYPES_3[int(t)]] = {"n1": n1, "chi1": float((m["good1"] & sel).sum()) / n1, "n12": n12,
                                   "chi12": float((m["good12"] & sel).sum()) / n12 if n12 else None}
    return out


def diversity(pred, ref, mask, samples: int) -> dict[str, np.ndarray]:
    """Diversity of S samples per frame. pred [F·S, L, 14, 3] (frame-major), ref [F or 1, L, 14, 3] Å,
    mask [L, 14] atoms used. Returns {'rmsd_gen', 'rmsd_ref', 'div'} each [F] (see module docstring)."""
    x = _t(pred, torch.float64)
    S = int(samples)
    if S < 2 or x.shape[0] % S:
        raise ValueError(f"diversity needs S >= 2 samples dividing the {x.shape[0]} rows, got S={S}")
    F = x.shape[0] // S
    m = _t(mask, torch.float64)
    n = m.sum()
    x = x.reshape(F, S, *x.shape[1:])
    y = _t(ref, torch.float64)
    y = y.reshape(-1, 1, *y.shape[1:])
    rmsd_ref = torch.sqrt((((x - y) ** 2).sum(-1) * m).sum((-2, -1)) / n).mean(1)
    iu, ju = torch.triu_indices(S, S, offset=1)
    gen = torch.sqrt((((x[:, iu] - x[:, ju]) ** 2).sum(-1) * m).sum((-2, -1)) / n).mean(1)
    div = 1.0 - gen / rmsd_ref
    return {"rmsd_gen": gen.numpy(), "rmsd_ref": rmsd_ref.numpy(), "div": div.numpy()}


def evaluate_frames(pred, ref, restype, segment, pred_mask, ref_mask, samples: int = 1, ideal_bond=None,
                    ideal_peptide=None, chunk: int = 64, disulfides=()) -> dict[str, np.ndarray]:
    """All metrics per row (and per frame when samples > 1).

    pred [N, L, 14, 3] Å with N = F·S rows (frame-major); ref [L, 14, 3], [1, L, 14, 3] or [F, L, 14, 3] Å;
    restype [L]; segment [L] (of pred); pred_mask, ref_mask [L, 14] bool. ideal_bond [21, max_bonds] Å and
    ideal_peptide Å default to :func:`ldb_hpc.chem.ideal_geometry.ideal_geometry`. Rows are processed ``chunk`` at a
    time. disulfides: the SG–SG bonds of pred's topology (residue index pairs; no other SG–SG pair is bonded).
    Returns a dict of numpy arrays: ROW_METRICS each [N] (plus 'graph_extra', 'graph_missing'), and, when
    samples > 1, FRAME_METRICS each [F].
    """
    pred = np.asarray(pred, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if ref.ndim == 3:
        ref = ref[None]
    N, L = pred.shape[:2]
    S = int(samples)
    if S < 1 or N % S:
        raise ValueError(f"{N} prediction rows are not a whole number of frames of {S} samples")
    F = N // S
    if ref.shape[0] not in (1, F) or ref.shape[1:] != pred.shape[1:]:
        raise ValueError(f"reference shape {ref.shape} does not fit {F} frames of shape {pred.shape[1:]}")
    if ideal_bond is None or ideal_peptide is None:
        from ldb_hpc.chem.ideal_geometry import ideal_geometry

        g = ideal_geometry()
        ideal_bond = g.bond_length if ideal_bond is None else ideal_bond
        ideal_peptide = g.peptide_bond if ideal_peptide is None else ideal_peptide
    pred_mask = np.asarray(pred_mask, dtype=bool) & SLOT_MASK[np.asarray(restype)]
    ref_mask = np.asarray(ref_mask, dtype=bool)
    both = pred_mask & ref_mask
    topo = build_topology(restype, segment, pred_mask, ideal_bond, ideal_peptide, disulfides)
    ref_row = np.arange(N) // S if ref.shape[0] > 1 else np.zeros(N, dtype=np.int64)

    parts: dict[str, list] = {}
    for r0 in range(0, N, chunk):
        x = pred[r0:r0 + chunk]
        y = ref[ref_row[r0:r0 + chunk]]
        vals = {"rmsd": rmsd(x, y, both), "rmsd_backbone": rmsd(x, y, both, slots=(0, 1, 2, 3)),
                "bond_outliers": bond_outliers(x, topo)}
        vals.update(pair_metrics(x, topo))
        vals["chi1_accuracy"], vals["chi12_accuracy"] = chi_accuracy(x, y, pred_mask, ref_mask, restype)
        for k, v in vals.items():
            parts.setdefault(k, []).append(np.asarray(v))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    if S > 1:
        frames: dict[str, list] = {}
        fchunk = max(1, chunk // S)
        for f0 in range(0, F, fchunk):
            f1 = min(F, f0 + fchunk)
            y = ref[f0:f1] if ref.shape[0] > 1 else ref
            for k, v in diversity(pred[f0 * S:f1 * S], y, both, S).items():
                frames.setdefault(k, []).append(v)
        out.update({k: np.concatenate(v) for k, v in frames.items()})
    return out


def aggregate(per_frame: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over rows / frames (NaN entries ignored; NaN when all are NaN) of every metric in ``per_frame``."""
    out = {}
    for k, v in per_frame.items():
        v = np.asarray(v, dtype=np.float64)
        ok = ~np.isnan(v)
        out[k] = float(v[ok].mean()) if ok.any() else float("nan")
    return out
