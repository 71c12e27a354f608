"""What the LDB model learns from, measured on real atoms: the decoder's target angles (:func:`true_angles`), the
latent encoder's input built from them (:func:`target_features`), and the clash penalty of the training losses
(:func:`clash_loss`). Used by :mod:`ldb_hpc.model.ldb`'s losses and tokenizer round trip."""

from __future__ import annotations

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.builder import measure_torsions
from ldb_hpc.geometry.peptide import LinkGeometry, alpha_of, link_geometry
from ldb_hpc.geometry.vectors import dihedral
from ldb_hpc.model.features import gather_nodes


def true_angles(pos: torch.Tensor, mask: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor,
                g: LinkGeometry | None = None) -> dict:
    """The decoder's targets measured on real atoms. pos [B, L, 14, 3] Å, mask [B, L, 14] bool.

    Returns α, ψ (of each link's first residue), φ (of its second) [B, L-1] and χ [B, L, 4] rad, each with an
    ``*_ok`` mask.
    """
    ca = pos[..., 1, :]
    g = g or link_geometry(ca, segment)
    n, c = pos[..., 0, :], pos[..., 2, :]
    m = mask
    link = g.linked[None]
    alpha = alpha_of(g.R, ca[:, :-1], c[:, :-1], ca[:, 1:])
    alpha_ok = link & m[:, :-1, 1] & m[:, :-1, 2] & m[:, 1:, 1]
    psi = dihedral(n[:, :-1], ca[:, :-1], c[:, :-1], n[:, 1:])
    psi_ok = link & m[:, :-1, 0] & m[:, :-1, 2] & m[:, 1:, 0]
    phi = dihedral(c[:, :-1], n[:, 1:], ca[:, 1:], c[:, 1:])
    phi_ok = link & m[:, :-1, 2] & m[:, 1:, 0] & m[:, 1:, 2]
    tor, tor_ok = measure_torsions(pos, restype, mask)
    return {"alpha": alpha, "alpha_ok": alpha_ok, "psi": psi, "psi_ok": psi_ok, "phi": phi, "phi_ok": phi_ok,
            "chi": tor[..., 1:], "chi_ok": tor_ok[..., 1:]}


def target_features(t: dict) -> torch.Tensor:
    """Per-residue encoder input [B, L, 24] from :func:`true_angles` (cos, sin, ok of each angle)."""
    B, L = t["chi"].shape[:2]

    def trig(a, ok):
        okf = ok.to(a.dtype)
        return torch.stack([torch.cos(a) * okf, torch.sin(a) * okf, okf], dim=-1)

    def per_res(x, front):  # link values [B, L-1, 3] → residues [B, L, 3] (before / after the residue)
        z = torch.zeros(B, 1, 3, dtype=x.dtype, device=x.device)
        return torch.cat([z, x], 1) if front else torch.cat([x, z], 1)

    a = trig(t["alpha"], t["alpha_ok"])
    parts = [per_res(a, True), per_res(a, False), per_res(trig(t["psi"], t["psi_ok"]), False),
             per_res(trig(t["phi"], t["phi_ok"]), True)]
    chi = trig(t["chi"], t["chi_ok"])  # [B, L, 4, 3]
    return torch.cat(parts + [chi.flatten(-2)], dim=-1)


def clash_loss(x: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor, nbr: torch.Tensor,
               cutoff: float = 2.6) -> torch.Tensor:
    """Σ relu(cutoff² − d²)/2·cutoff per residue (mean over residues) over atom pairs of the 8 nearest residues that are
    not covalently close. Sequence neighbours count only for pairs with an atom beyond CB (slot ≥ 5), except Pro CD,
    which is bonded to its own N and so 1-3 / 1-4 to the previous residue; Cys SG–SG (disulfides) is exempt.
    x [B, L, 14, 3] Å; restype, segment [L]; nbr [B, L, k]."""
    B, L = x.shape[:2]
    if nbr.shape[-1] == 0:
        return x.sum() * 0
    nbr = nbr[..., :8]  # the 8 nearest residues carry nearly all contacts
    k = nbr.shape[-1]
    dev = x.device
    exists = torch.as_tensor(rc.SLOT_MASK, device=dev)[restype]  # [L, 14]
    xj = gather_nodes(x.reshape(B, L, -1), nbr).reshape(B, L, k, rc.NUM_SLOTS, 3)
    d2 = (x[:, :, None, :, None, :] - xj[:, :, :, None, :, :]).pow(2).sum(-1)  # [B, L, k, 14, 14]
    i = torch.arange(L, device=dev)[None, :, None]
    adjacent = ((nbr - i).abs() == 1) & (segment[nbr] == segment[i])  # [B, L, k]
    deep = torch.zeros(L, rc.NUM_SLOTS, dtype=torch.bool, device=dev)
    deep[:, 5:] = True
    deep[restype == rc.RESTYPE_INDEX["PRO"], 6] = False  # Pro CD
    deep_pair = deep[None, :, None, :, None] | deep[nbr][..., None, :]
    ok = exists[None, :, None, :, None] & exists[nbr][..., None, :] & (~adjacent[..., None, None] | deep_pair)
    sg = torch.zeros(L, rc.NUM_SLOTS, dtype=torch.bool, device=dev)
    sg[restype == rc.RESTYPE_INDEX["CYS"], 5] = True
    ok &= ~(sg[None, :, None, :, None] & sg[nbr][..., None, :])
    # relu(c² − d²) / 2c ≈ relu(c − d) near the cutoff, without a square root on the hot path.
    pen = torch.relu(cutoff * cutoff - d2) * ok / (2 * cutoff)
    return pen.sum() / (B * L)
