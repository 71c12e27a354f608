"""Rotatable hydrogens (ldb_hpc.geometry.hydrogen_fit): methyls, NH3+, OH and SH turned away from their
neighbours after the ideal placement — checked against a loop-clear oracle, on a built collision, for determinism
and device placement, and by amber14's starting energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydrogen_cases import residues_of as _residues

from ldb_hpc.chem import hydrogens as ch
from ldb_hpc.chem.residues import ATOM14, RESTYPE_INDEX, RESTYPES_3, SLOT_MASK
from ldb_hpc.geometry import hydrogen_fit as hf
from ldb_hpc.geometry.hydrogens import place_extra
from ldb_hpc.geometry.vectors import dihedral


def test_rotor_groups_are_the_rotatable_hydrogens():
    """Methyls, OH/SH, Lys NH3+ and the N-terminal NH3+ turn; nothing else does; a group leaves out of its score
    exactly the atoms within three bonds of its hydrogens."""
    rotors = set()
    for res in RESTYPES_3[:20]:
        r = RESTYPE_INDEX[res]
        for g in np.nonzero(ch.ROTOR_KIND[r] >= 0)[0]:
            rotors |= {(res, name) for name in _slot_names(res, ch.ROTOR_H[r, g][ch.ROTOR_H_REAL[r, g]])}
    side = {("ALA", "HB"), ("VAL", "HG1"), ("VAL", "HG2"), ("LEU", "HD1"), ("LEU", "HD2"), ("ILE", "HG2"),
            ("ILE", "HD1"), ("THR", "HG2"), ("MET", "HE"), ("LYS", "HZ")}
    want = {(res, f"{h}{k}") for res, h in side for k in (1, 2, 3)} | {
        ("SER", "HG"), ("THR", "HG1"), ("TYR", "HH"), ("CYS", "HG")} | {
        (res, h) for res in RESTYPES_3[:20] if res != "PRO" for h in ("H", "H2", "H3")}
    assert rotors == want
    r, g = RESTYPE_INDEX["ILE"], 2  # CD1: HD1x–CD1–CG1–CB, so CB and what hangs on CG1 are left out, CA is not
    near = set(_slot_names("ILE", np.nonzero(ch.ROTOR_NEAR[r, g])[0]))
    assert near == {"CB", "CG1", "CD1", "HG12", "HG13", "HD11", "HD12", "HD13"}


def _slot_names(res, slots):
    names = list(ATOM14[res]) + [""] * (14 - len(ATOM14[res])) + list(ch.EXTRA_NAMES[res])
    # the N-terminal H (the second slot named H) is the rotor's: both read "H"
    return [names[s] for s in slots]


def _probe_pair(distance: float):
    """ALA (its own segment) and a GLY whose O lies ``distance`` Å from the ALA CB, on the line CB→HB1 of the
    ideal methyl, with the rest of the GLY behind it: [2, 14, 3] Å, float64."""
    from ldb_hpc.geometry.vectors import safe_norm

    pos = torch.zeros(2, 14, 3, dtype=torch.float64)
    pos[0, :5] = torch.tensor([[-0.525, 1.363, 0.0], [0.0, 0.0, 0.0], [1.526, 0.0, 0.0], [2.153, -1.062, 0.0],
                               [-0.529, -0.774, -1.205]], dtype=torch.float64)  # N CA C O CB
    residues = _residues(["ALA", "GLY"], [0, 1])
    ideal = place_extra(pos, residues.restype, residues.segment, ch.Protonation(), turn=False)
    cb, hb1 = pos[0, 4], ideal[0, 14 + list(ch.EXTRA_NAMES["ALA"]).index("HB1")]
    d = (hb1 - cb) / safe_norm(hb1 - cb)
    side = torch.linalg.cross(d, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    side = side / safe_norm(side)
    o = cb + distance * d
    c = o + 1.23 * d
    ca = c + 1.52 * (0.5 * d + 0.866 * side)
    n = ca + 1.46 * d
    pos[1, :4] = torch.stack([n, ca, c, o])
    return residues, pos


def _h_heavy_min(full, residues, i, j):
    """Closest hydrogen of residue i to a heavy atom of residue j (Å)."""
    mask = ch.extra_mask(residues.restype, residues.segment, ch.Protonation())
    h = full[i, 14:][torch.from_numpy(mask[i] & ch.SLOT_IS_H[residues.restype[i], 14:])]
    heavy = full[j, :14][torch.from_numpy(SLOT_MASK[residues.restype[j]])]
    return float(torch.cdist(h, heavy).min())


def test_a_methyl_on_a_neighbour_turns_away():
    """The ideal methyl points an H 1.8 Å at a carbonyl O 2.9 Å from its carbon; turned 50° (where the overlap with
    r0 = 2.3 Å is gone but the torsion cost is below eclipsed's), every H is beyond 2.29 Å."""
    residues, pos = _probe_pair(2.9)
    ideal = place_extra(pos, residues.restype, residues.segment, ch.Protonation(), turn=False)
    full = place_extra(pos, residues.restype, residues.segment, ch.Protonation())
    assert _h_heavy_min(ideal, residues, 0, 1) < 1.85
    assert _h_heavy_min(full, residues, 0, 1) > 2.29
    hb = [14 + list(ch.EXTRA_NAMES["ALA"]).index(f"HB{k}") for k in (1, 2, 3)]
    turn = np.degrees(float(dihedral(pos[0, 0], pos[0, 1], pos[0, 4], full[0, hb[0]])
                            - dihedral(pos[0, 0], pos[0, 1], pos[0, 4], ideal[0, hb[0]])))
    assert abs(abs((turn + 180) % 360 - 180) - 50) < 1e-6


def test_turning_moves_only_rotor_hydrogens_on_their_circle(built):
    residues, heavy, full = built
    ideal = place_extra(heavy, residues.restype, residues.segment, ch.Protonation(), turn=False)
    mask = ch.extra_mask(residues.restype, residues.segment, ch.Protonation())
    rotor = np.zeros((len(residues), 14 + ch.NUM_EXTRA), dtype=bool)
    for i, r in enumerate(residues.restype):
        for g in range(ch.NUM_ROTORS):
            if ch.ROTOR_KIND[r, g] >= 0:
                slots = ch.ROTOR_H[r, g][ch.ROTOR_H_REAL[r, g]]
                rotor[i, slots] |= mask[i, slots - 14].all()
    fixed = torch.from_numpy(~rotor)
    assert torch.equal(full[fixed], ideal[fixed])  # heavy atoms, OXT and every other hydrogen: bit for bit
    moved = (full - ideal).norm(dim=-1) > 1e-6
    assert moved.sum() > 30 and not (moved & fixed).any()
    i, s = np.nonzero(rotor)
    for which in (0, 1):  # the distance to the parent and to the atom before it: unchanged (a turn about that bond)
        ref = full[i, ch.ROTOR_AXIS[residues.restype[i], ch.SLOT_ROTOR[residues.restype[i], s], 1 - which]]
        ref_ideal = ideal[i, ch.ROTOR_AXIS[residues.restype[i], ch.SLOT_ROTOR[residues.restype[i], s], 1 - which]]
        torch.testing.assert_close((full[i, s] - ref).norm(dim=-1), (ideal[i, s] - ref_ideal).norm(dim=-1))


def test_turning_is_deterministic_and_row_independent(built):
    residues, heavy, _ = built
    one = heavy.float()
    rows = torch.stack([one, one.flip(-1), one + 1.0])  # three different rows, the first the structure as built
    a = place_extra(rows, residues.restype, residues.segment, ch.Protonation())
    b = place_extra(rows, residues.restype, residues.segment, ch.Protonation())
    alone = place_extra(one, residues.restype, residues.segment, ch.Protonation())
    assert torch.equal(a, b) and a.dtype == torch.float32
    torch.testing.assert_close(a[0], alone, atol=1e-5, rtol=0)  # a row does not depend on the batch it is in
    exists = torch.from_numpy(np.concatenate([SLOT_MASK[residues.restype], ch.extra_mask(
        residues.restype, residues.segment, ch.Protonation())], axis=-1))
    torch.testing.assert_close(a[2][exists] - 1.0, alone[exists], atol=1e-4, rtol=0)  # nor on where it is


def _reference_turns(full, restype, present):
    """Loop-clear oracle of turn_rotors: each group, one at a time, scored against every atom of its row (no
    neighbour search), in the same steps. full [L, A, 3] float64 ideal placement; returns the turned [L, A, 3]."""
    turns, allowed = hf._turn_grid()
    exists = np.concatenate([SLOT_MASK[restype], present], axis=-1)
    h_of = {}
    for res, r in enumerate(restype):
        for g in range(ch.NUM_ROTORS):
            hs = ch.ROTOR_H[r, g][ch.ROTOR_H_REAL[r, g]]
            if ch.ROTOR_KIND[r, g] >= 0 and exists[res, hs].all():
                h_of[res, g] = hs
    turning = np.zeros(exists.shape, dtype=bool)
    for (res, _), hs in h_of.items():
        turning[res, hs] = True
    r0 = torch.from_numpy(np.where(ch.SLOT_IS_H[restype], hf.R0_H, hf.R0_HEAVY))

    def turned(res, g, theta):  # [..., h, 3] for theta [...]
        b, c = ch.ROTOR_AXIS[restype[res], g]
        v, w, z = hf._spokes(full[res, h_of[res, g]], full[res, b], full[res, c])
        theta = torch.as_tensor(theta, dtype=full.dtype)[..., None, None]
        return full[res, c] + z + (v - z) * torch.cos(theta) + w * torch.sin(theta)

    def place(theta):
        pos = full.clone()
        for (res, g), t in theta.items():
            pos[res, h_of[res, g]] = turned(res, g, t)
        return pos

    def best(pos, res, g, counted, candidates):
        ok = torch.from_numpy(counted & ~(np.arange(len(restype)) == res)[:, None] | counted & ~ch.ROTOR_NEAR[
            restype[res], g])
        # every atom that can touch: within r0 + the longest X–H bond (1.34 Å) of the parent
        ok &= (pos - full[res, ch.ROTOR_AXIS[restype[res], g, 1]]).norm(dim=-1) < hf.R0_HEAVY + 1.35
        s = torch.relu(r0[ok] - (turned(res, g, candidates)[..., None, :] - pos[ok]).norm(dim=-1))  # [T, h, atoms]
        score = (s**2 + (hf.STEEP * s) ** 4).sum((1, 2)).numpy()
        if ch.ROTOR_KIND[restype[res], g] == ch.METHYL:
            score += hf.METHYL_COST * (1 - np.cos(3 * np.asarray(candidates))) / 2
        return candidates[int(np.argmin(np.round(score / hf.STEP)))]

    grid = {key: [t for t, a in zip(turns[ch.ROTOR_KIND[restype[key[0]], key[1]]],
                                    allowed[ch.ROTOR_KIND[restype[key[0]], key[1]]]) if a] for key in h_of}
    theta = {key: best(full, *key, exists & ~turning, grid[key]) for key in h_of}
    colour = {key: int(hf._mix(np.array([key[0] * ch.NUM_ROTORS + key[1]], np.uint64))[0] % hf.COLOURS) for key in h_of}
    for c in range(hf.COLOURS):
        now = place(theta)
        proposed = {key: best(now, *key, exists, grid[key]) for key in h_of if colour[key] == c}
        moved = place({**theta, **proposed})
        theta.update({key: best(moved, *key, exists, [theta[key], t]) for key, t in proposed.items()})
    return place(theta)


def test_turning_matches_the_loop_clear_reference(built):
    """The batched neighbour search (NEIGHBOURS residues, NEAREST atoms) misses nothing that counts: the same turns
    as scoring every group against every atom of the structure, on the example built by the ideal model."""
    residues, heavy, full = built
    present = ch.extra_mask(residues.restype, residues.segment, ch.Protonation())
    ideal = place_extra(heavy, residues.restype, residues.segment, ch.Protonation(), turn=False)
    ref = _reference_turns(ideal, residues.restype, present)
    moved = (ref - ideal).norm(dim=-1) > 1e-6
    assert moved.sum() > 30
    torch.testing.assert_close(full, ref, atol=1e-9, rtol=0)


def _openmm_start_energy(residues, positions) -> float:
    """amber14 (vacuum, no cutoff) energy in kJ/mol of one row [L, 14 + NUM_EXTRA, 3] Å as the PDB writer writes it."""
    import io

    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from ldb_hpc.io.pdb import pdb_text

    pdb = app.PDBFile(io.StringIO(pdb_text(residues, positions.numpy()[None, None], ch.Protonation())))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_turning_lowers_the_openmm_start_energy(built):
    """amber14's starting energy of the example built by the ideal model: lower with the rotors turned."""
    pytest.importorskip("openmm")
    residues, heavy, full = built
    ideal = place_extra(heavy, residues.restype, residues.segment, ch.Protonation(), turn=False)
    e_ideal, e_turned = _openmm_start_energy(residues, ideal), _openmm_start_energy(residues, full)
    assert np.isfinite(e_turned) and e_turned < e_ideal, (e_ideal, e_turned)


