#!/usr/bin/env python
"""Where a backmapped trajectory's error lies, frame against frame (issue 20's MD analysis, docs/MODEL.md).

    python scripts/md_error_analysis.py PRED REF [--samples S] [--top N]

PRED: the backmapped rows (``ldb-hpc backmap``; with ``--samples S`` the rows are frame-major, S per frame);
REF: the reference trajectory, one frame per PRED frame. Heavy atoms are matched by residue index and name, as
``evaluate`` matches them. Reported, all as root mean squares over the matched heavy atoms of every frame (Å):

- ``sample 0``: each frame's first sample, no superposition (``evaluate``'s heavy-atom RMSD);
- the side chains beyond CB in each residue's own N–CA–C frame (``side chain``; these figures divide by all the
  matched heavy atoms too, so that their squares compare with sample 0's), split as ``bias`` (the mean
  predicted against the mean reference position over frames), ``reference spread`` (the reference about its
  own mean: what no prediction fixed per residue could remove) and ``prediction spread`` (the prediction about
  its mean);
- ``medoid over frames``: sample 0 with every frame given, per residue, the one predicted side chain (of sample
  0) nearest to all the others — a bound on what consistent choices could give, not a method (it reads other
  frames);
- with S > 1: ``medoid of samples`` (per frame and residue, the sample nearest to the others) and ``best of
  samples`` (the sample nearest to the reference: an oracle bound on choosing among the model's samples).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

BACKBONE = ("N", "CA", "C", "O", "CB")


def _atoms(top) -> dict:
    out: dict = defaultdict(dict)
    for a in top.atoms:
        if a.element is not None and a.element.symbol != "H" and a.name != "OXT":  # as evaluate matches
            out[a.residue.index][a.name] = a.index
    return out


def _local(x: np.ndarray, n: int, ca: int, c: int, idx: list[int]) -> np.ndarray:
    """Atoms idx of x [F, A, 3] in the residue frame of (N, CA, C): [F, len(idx), 3]."""
    e1 = x[:, c] - x[:, ca]
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    u = x[:, n] - x[:, ca]
    e2 = u - (u * e1).sum(-1, keepdims=True) * e1
    e2 /= np.linalg.norm(e2, axis=-1, keepdims=True)
    frame = np.stack([e1, e2, np.cross(e1, e2)], -1)
    return np.einsum("fkd,fdj->fkj", x[:, idx] - x[:, [ca]], frame)


def analyse(pred: np.ndarray, ref: np.ndarray, pred_atoms: dict, ref_atoms: dict, samples: int = 1) -> dict:
    """pred [F·S, A, 3] Å (frame-major), ref [F, A', 3] Å; atoms: residue → name → column. Returns the figures
    of the module docstring (Å) and ``residues``: per residue (index, squared error beyond CB summed over frames,
    bias part, reference spread part)."""
    F = ref.shape[0]
    if pred.shape[0] != F * samples:
        raise ValueError(f"{pred.shape[0]} predicted rows for {F} reference frames x {samples} samples")
    p_all = pred.reshape(F, samples, *pred.shape[1:])
    sq = defaultdict(float)
    n_all = n_sc = 0
    residues = []
    for i, names in pred_atoms.items():
        common = [k for k in names if k in ref_atoms.get(i, {})]
        if not common:
            continue
        pcols, rcols = [names[k] for k in common], [ref_atoms[i][k] for k in common]
        p, r = p_all[:, :, pcols], ref[:, None, rcols]
        e = ((p - r) ** 2).sum(-1).sum(-1)  # [F, S]
        sq["sample 0"] += e[:, 0].sum()
        n_all += len(common) * F
        if samples > 1:
            d = ((p[:, :, None] - p[:, None]) ** 2).sum(-1).sum(-1).sum(-1)  # [F, S]
            sq["medoid of samples"] += e[np.arange(F), d.argmin(1)].sum()
            sq["best of samples"] += e.min(1).sum()
        side = [k for k in common if k not in BACKBONE]
        if not side or not all(k in common for k in ("N", "CA", "C")):
            continue
        cols = lambda at, ks, i=i: [at[i][k] for k in ks]  # noqa: E731
        lp = _local(p_all[:, 0], *cols(pred_atoms, ("N", "CA", "C")), cols(pred_atoms, side))
        lr = _local(ref, *cols(ref_atoms, ("N", "CA", "C")), cols(ref_atoms, side))
        err = ((lp - lr) ** 2).sum(-1).sum(-1)
        bias = ((lp.mean(0) - lr.mean(0)) ** 2).sum() * F
        spread_r = ((lr - lr.mean(0)) ** 2).sum()
        sq["side chain"] += err.sum()
        sq["bias"] += bias
        sq["reference spread"] += spread_r
        sq["prediction spread"] += ((lp - lp.mean(0)) ** 2).sum()
        dm = ((lp[:, None] - lp[None]) ** 2).sum(-1).sum(-1).sum(1)
        sq["medoid over frames"] += ((lp[dm.argmin()] - lr) ** 2).sum()
        residues.append((i, float(err.sum()), float(bias), float(spread_r)))
        n_sc += len(side) * F
    out = {"sample 0": float(np.sqrt(sq.pop("sample 0") / n_all))}
    for k in ("medoid of samples", "best of samples"):
        if k in sq:
            out[k] = float(np.sqrt(sq.pop(k) / n_all))
    med = sq.pop("medoid over frames")
    for k, v in sq.items():  # over all matched heavy atoms too, so that they compare in squares with sample 0
        out[k] = float(np.sqrt(v / n_all))
    out["medoid over frames"] = float(np.sqrt((out["sample 0"] ** 2 * n_all - sq["side chain"] + med) / n_all))
    out["residues"] = sorted(residues, key=lambda x: -x[1])
    out["side chain atoms share"] = n_sc / max(n_all, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred")
    ap.add_argument("ref")
    ap.add_argument("--samples", type=int, default=1, help="samples per frame in PRED (default 1)")
    ap.add_argument("--top", type=int, default=10, help="residues with the largest side-chain error listed")
    args = ap.parse_args(argv)
    import mdtraj as md

    try:
        pred, ref = md.load(args.pred), md.load(args.ref)
        res = analyse(pred.xyz * 10, ref.xyz * 10, _atoms(pred.topology), _atoms(ref.topology), args.samples)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for k, v in res.items():
        if k not in ("residues", "side chain atoms share"):
            print(f"{k:<22} {v:.3f} Å")
    total = sum(r[1] for r in res["residues"])
    for i, err, bias, spread in res["residues"][: args.top]:
        print(f"  {str(pred.topology.residue(i)):<8} {100 * err / total:5.1f} % of the side-chain error "
              f"(bias {100 * bias / max(err, 1e-9):.0f} %, reference spread {100 * spread / max(err, 1e-9):.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
