#!/usr/bin/env python
"""Readiness for simulation, measured (issue 20): `backmap --hydrogens` outputs and their references minimised
with OpenMM amber14 to a stated convergence, failures counted.

For every structure of a set (default: the 24 CASP12 targets of ../shared/data/test/casp12):

- ours: `ldb-hpc coarsen` makes the CA trace, `ldb-hpc backmap --hydrogens -o T.pdb` rebuilds it; OpenMM reads
  T.pdb as written (`openmm.app.PDBFile`).
- the reference: the CASP12 PDB itself, split into chains at its breaks (ldb-hpc's own rule, CA–CA > 4.2 Å, so
  that a gap is not bonded across), missing heavy atoms and terminal OXT added by PDBFixer (no missing loops are
  built: the residues stay those of the file, which are ours), its hydrogens removed and added again by
  `Modeller.addHydrogens(forcefield, pH=7)` with the same force field.

Both go through the same minimisation: `ForceField("amber14-all.xml")`, vacuum (NoCutoff), no constraints, the
CPU platform; `LocalEnergyMinimizer.minimize` from the given coordinates, stopped by a reporter as soon as the RMS
of all force components is ≤ ``--tolerance`` (10 kJ/mol/nm, the criterion OpenMM documents for its own tolerance),
at most ``--max-iterations`` L-BFGS iterations (2,000). **Converged** = the system was built, the final energy is
finite and the final RMS force (recomputed from the final state) is ≤ the tolerance. Anything else is a failure
and is counted, per structure and in the summary, never skipped: an exception (createSystem, the minimiser), a
non-finite energy, or not converged within the cap.

Implicit solvent was measured and left out: OpenMM 8.6 ships `implicit/obc2.xml`, `gbn2.xml` (and obc1, gbn, hct)
to combine with amber14, but as a CustomGBForce: 0.10 s per force evaluation for the 1,092 atoms of T0922 on this
2-core machine, against about 3 ms per minimiser iteration in vacuum, i.e. hours for the 24 targets; `--implicit
gbn2` runs it where that is affordable. The 24 CASP12 targets in vacuum took 24 min here (niced, other work on the
cores; the minimiser 785 s for ours, 513 s for the references).

Per structure: the potential energy per residue at the start and after minimisation (and the nonbonded part of
the start), the iterations, the final RMS force, the heavy-atom RMSD the minimisation moved (Å, no superposition:
the displacement of every non-hydrogen atom), the number of CYX residues OpenMM assigned (amber14's templates
matched on the topology it built the system from, disulfide bonds present), the atom with the largest force at the
start, and, with `gmx` on PATH, the disulfides GROMACS `pdb2gmx -ignh -ff amber99sb-ildn` links in our output.

Rows: benchmark "simulation_ready" (a summary per set and structure kind) and "simulation_ready_structure" (per
structure) in benchmarks/results.csv; a table goes to stdout.

    python benchmarks/simulation_ready.py [--data ../shared/data/test/casp12] [--model default] [--threads 1]
    python benchmarks/simulation_ready.py --limit 3      # the first three targets only (a partial run)

OpenMM and PDBFixer are test/benchmark dependencies (`pip install openmm pdbfixer`), not runtime ones.
"""

from __future__ import annotations

import io
import math
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hydrogens import FORCEFIELD, _cli, cpu_context, potential_energy, set_parser, set_pdbs
from results_csv import append_rows

TOLERANCE = 10.0  # kJ/mol/nm: RMS of all force components at which a minimisation counts as converged
MAX_ITERATIONS = 2000  # L-BFGS iterations; the most a CASP12 structure needed was 577 (T0912, ours, 9,376 atoms)
IMPLICIT = {"obc2": "implicit/obc2.xml", "gbn2": "implicit/gbn2.xml"}
OURS, REFERENCE = "ours", "reference"
PDB2GMX_LINK = re.compile(r"Linking (\w+)-(\d+) (\w+)-(\d+) and (\w+)-(\d+) (\w+)-(\d+)")


@dataclass
class Minimisation:
    """One structure through amber14 and the minimiser. Energies in kJ/mol, forces in kJ/mol/nm, RMSD in Å."""

    residues: int = 0
    atoms: int = 0
    cyx: int = 0
    e0: float = math.nan
    e0_nonbonded: float = math.nan
    e1: float = math.nan
    iterations: int = 0
    rms_force: float = math.nan
    rmsd_moved: float = math.nan
    seconds: float = 0.0
    worst_start_atom: str = ""
    error: str = ""  # an exception's message; "" when createSystem and the minimiser ran
    tolerance: float = TOLERANCE
    max_iterations: int = MAX_ITERATIONS
    extra: dict = field(default_factory=dict)

    @property
    def failure(self) -> str:
        """'' when converged, else why not (the exception, a non-finite energy, or not converged)."""
        if self.error:
            return self.error
        if not (math.isfinite(self.e0) and math.isfinite(self.e1)):
            return "non-finite energy"
        if not self.rms_force <= self.tolerance:
            return f"not converged: RMS force {self.rms_force:.3g} kJ/mol/nm after {self.iterations} iterations"
        return ""

    @property
    def converged(self) -> bool:
        return not self.failure

    def per_residue(self, energy: float) -> float:
        return energy / self.residues if self.residues else math.nan


def _stop_at_tolerance(tolerance: float):
    """An openmm.MinimizationReporter that stops L-BFGS once the RMS of the gradient components is ≤ tolerance
    (kJ/mol/nm) and counts the iterations in ``.iterations`` (the class is made here: openmm is imported late)."""
    import numpy as np
    import openmm

    class StopAtTolerance(openmm.MinimizationReporter):
        iterations = 0

        def report(self, iteration, x, grad, args):
            self.iterations += 1
            g = np.asarray(grad)
            return bool(np.sqrt(np.mean(g * g)) <= tolerance)

    return StopAtTolerance()


def forcefield(implicit: str | None = None):
    """amber14 (vacuum), or with one of OpenMM's implicit-solvent files (IMPLICIT)."""
    import openmm.app as app

    return app.ForceField(FORCEFIELD, *([IMPLICIT[implicit]] if implicit else []))


def heavy_rmsd(topology, a, b) -> float:
    """RMS displacement (Å, no superposition) of the non-hydrogen atoms between positions ``a`` and ``b``
    ([N, 3] nm, numpy or OpenMM Quantity) of ``topology``."""
    import numpy as np
    import openmm.unit as unit

    def nm(x):
        return np.asarray(x.value_in_unit(unit.nanometer) if unit.is_quantity(x) else x, dtype=np.float64)

    heavy = [at.index for at in topology.atoms() if at.element is None or at.element.symbol != "H"]
    d = nm(a)[heavy] - nm(b)[heavy]
    return float(10.0 * np.sqrt((d * d).sum(axis=1).mean())) if heavy else math.nan


def _atom_label(atom) -> str:
    return f"{atom.residue.name}{atom.residue.id} {atom.name}"


def minimise(topology, positions, ff, tolerance: float = TOLERANCE, max_iterations: int = MAX_ITERATIONS,
             threads: int = 1) -> Minimisation:
    """Build the amber14 system of ``topology`` (NoCutoff, no constraints) and minimise from ``positions``
    (OpenMM Quantity or [N, 3] nm) until the RMS force is ≤ ``tolerance`` kJ/mol/nm or ``max_iterations``.

    Never raises for what the structure does (a missing template, NaN coordinates): the message lands in
    ``error`` and the result counts as failed."""
    import numpy as np
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    out = Minimisation(residues=topology.getNumResidues(), atoms=topology.getNumAtoms(), tolerance=tolerance,
                       max_iterations=max_iterations)
    try:
        system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
        out.cyx = sum(t.name == "CYX" for t in ff.getMatchingTemplates(topology))
        for f in system.getForces():  # group 1: the nonbonded terms, to tell clashes from bad geometry
            f.setForceGroup(1 if isinstance(f, openmm.NonbondedForce) or "GB" in type(f).__name__ else 0)
        context = cpu_context(system, positions, threads)
        out.e0 = potential_energy(context)
        out.e0_nonbonded = potential_energy(context, groups={1})
        start = context.getState(getPositions=True, getForces=True)
        force = np.linalg.norm(start.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
                               axis=1)
        if np.isfinite(force).any():
            worst = int(np.nanargmax(np.where(np.isfinite(force), force, np.nan)))  # a NaN force says nothing
            out.worst_start_atom = f"{_atom_label(list(topology.atoms())[worst])} ({force[worst]:.2g} kJ/mol/nm)"
        reporter = _stop_at_tolerance(tolerance)
        t0 = time.perf_counter()
        try:
            openmm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations, reporter)
        finally:
            out.seconds = time.perf_counter() - t0
            out.iterations = reporter.iterations
        end = context.getState(getEnergy=True, getPositions=True, getForces=True)
        out.e1 = end.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f = end.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        out.rms_force = float(np.sqrt(np.mean(np.asarray(f) ** 2)))
        out.rmsd_moved = heavy_rmsd(topology, start.getPositions(asNumpy=True), end.getPositions(asNumpy=True))
    except Exception as exc:  # noqa: BLE001 - the message is the result
        out.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return out


def split_at_breaks(topology, positions):
    """A copy of ``topology`` with a new chain at every break of ldb-hpc's rule (chain change, CA–CA > 4.2 Å, a
    residue without CA), so that no peptide bond is made across a gap; atoms, names and order are kept."""
    import numpy as np
    import openmm.app as app
    import openmm.unit as unit

    from ldb_hpc.chem.protein import segments_from_ca

    xyz = np.asarray(positions.value_in_unit(unit.angstrom))
    residues = list(topology.residues())
    ca = [next((a.index for a in r.atoms() if a.name == "CA"), None) for r in residues]
    segment = segments_from_ca(np.array([r.chain.id for r in residues], dtype=object),
                               np.array([xyz[i] if i is not None else [np.nan] * 3 for i in ca]),
                               np.array([i is not None for i in ca]))
    new, chain, last = app.Topology(), None, None
    for r, s in zip(residues, segment):
        if s != last:
            chain, last = new.addChain(r.chain.id), s
        nr = new.addResidue(r.name, chain, r.id, r.insertionCode)
        for a in r.atoms():
            new.addAtom(a.name, a.element, nr)
    return new


def prepare_reference(pdb_path, ff) -> tuple[object, object, dict]:
    """The reference structure ready for amber14: split at breaks, heavy atoms (and terminal OXT) completed by
    PDBFixer, hydrogens removed and added by ``Modeller.addHydrogens(ff, pH=7)``.

    Returns (topology, positions, notes) with notes {"heavy_atoms_added", "chains"}."""
    import openmm.app as app
    from pdbfixer import PDBFixer

    pdb = app.PDBFile(str(pdb_path))
    buf = io.StringIO()
    app.PDBFile.writeFile(split_at_breaks(pdb.topology, pdb.positions), pdb.positions, buf, keepIds=True)
    buf.seek(0)
    fixer = PDBFixer(pdbfile=buf)
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # the residues of the file, as ours: gaps stay gaps (chain ends), no modelled loops
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    added = sum(len(v) for v in fixer.missingAtoms.values()) + sum(len(v) for v in fixer.missingTerminals.values())
    fixer.addMissingAtoms(seed=0)  # reproducible placement of what it adds
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete([a for a in modeller.topology.atoms() if a.element is not None and a.element.symbol == "H"])
    random.seed(0)  # Modeller.addHydrogens starts its hydrogens at random.random() offsets, then minimises them
    modeller.addHydrogens(ff, pH=7.0)
    return modeller.topology, modeller.positions, {"heavy_atoms_added": added,
                                                   "chains": modeller.topology.getNumChains()}


def parse_pdb2gmx_links(text: str) -> list[tuple[str, int, str, int]]:
    """The special bonds `gmx pdb2gmx` made, from its output: [(residue 1, number 1, residue 2, number 2)] of
    every "Linking CYS-111 SG-859 and CYS-123 SG-965..." line (atom names and numbers dropped)."""
    return [(m[1], int(m[2]), m[5], int(m[6])) for m in PDB2GMX_LINK.finditer(text)]


def pdb2gmx_links(pdb_path, gmx: str = "gmx", ff: str = "amber99sb-ildn") -> dict:
    """Run `gmx pdb2gmx -f PDB -ignh -ff FF -water none` non-interactively in a temporary folder.

    Returns {"rc", "links" (parse_pdb2gmx_links), "seconds", "error" (the Fatal-error text, '' on success)}.
    pdb2gmx links two SG when their distance is within ±10 % of specbond.dat's 0.2 nm, strictly
    (1.8 < d < 2.2 Å); outside it the two CYS silently become free CYS with HG."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([gmx, "pdb2gmx", "-f", str(Path(pdb_path).resolve()), "-o", "out.gro", "-p", "topol.top",
                               "-ignh", "-ff", ff, "-water", "none"], cwd=tmp, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    error = ""
    if proc.returncode != 0:
        fatal = text.split("Fatal error:", 1)
        error = " ".join((fatal[1] if len(fatal) > 1 else text[-300:]).split("For more information")[0].split())
    return {"rc": proc.returncode, "links": parse_pdb2gmx_links(text), "seconds": seconds, "error": error[:300]}


def run_target(pdb: Path, work: Path, ff, model: str, tolerance: float, max_iterations: int, threads: int,
               gmx: str | None) -> dict:
    """Backmap one reference with hydrogens and minimise it and the protonated reference; {"target", OURS,
    REFERENCE: Minimisation, "backmap_s", "gmx" (pdb2gmx_links of ours, or None)}."""
    import openmm.app as app

    name = pdb.stem
    cg, out = work / f"{name}.cg.h5", work / f"{name}.H.pdb"
    t0 = time.perf_counter()
    _cli(["coarsen", pdb, "-o", cg, "--overwrite"])
    _cli(["backmap", cg, "-o", out, "--hydrogens", "--model", model, "--threads", threads, "--overwrite",
          "--no-progress"])
    result = {"target": name, "backmap_s": time.perf_counter() - t0, "gmx": None}
    ours = app.PDBFile(str(out))
    result[OURS] = minimise(ours.topology, ours.positions, ff, tolerance, max_iterations, threads)
    try:
        top, pos, notes = prepare_reference(pdb, ff)
    except Exception as exc:  # noqa: BLE001 - a reference that cannot be prepared is a counted failure
        result[REFERENCE] = Minimisation(error=f"preparing the reference: {type(exc).__name__}: {exc}"[:200])
    else:
        result[REFERENCE] = minimise(top, pos, ff, tolerance, max_iterations, threads)
        result[REFERENCE].extra.update(notes)
    if gmx:
        result["gmx"] = pdb2gmx_links(out, gmx)
    return result


def summarise(results: list[dict], kind: str) -> dict:
    """Counts and medians over structures of one kind (OURS or REFERENCE); medians over finite values only, the
    failures are counted, never dropped."""
    ms = [r[kind] for r in results]

    def median(values):
        values = [v for v in values if math.isfinite(v)]
        return statistics.median(values) if values else math.nan

    return {"structures": len(ms), "failed": sum(not m.converged for m in ms),
            "exceptions": sum(bool(m.error) for m in ms),
            "not_converged": sum(not m.error and not m.converged for m in ms),
            "median_e0_per_residue": median([m.per_residue(m.e0) for m in ms]),
            "median_e1_per_residue": median([m.per_residue(m.e1) for m in ms]),
            "median_rmsd_moved": median([m.rmsd_moved for m in ms]),
            "median_iterations": median([float(m.iterations) for m in ms if not m.error]),
            "cyx": sum(m.cyx for m in ms), "minimise_s": sum(m.seconds for m in ms)}


def csv_rows(results: list[dict], dataset: str, setup: str, labels: dict) -> list[tuple]:
    """(benchmark, configuration, metric, value, unit) rows: per structure and the summary of each kind."""
    rows = []
    for r in results:
        for kind in (OURS, REFERENCE):
            m, conf = r[kind], f"{dataset}|{r['target']}|{labels[kind]}|{setup}"
            rows += [("simulation_ready_structure", conf, metric, value, unit) for metric, value, unit in (
                ("residues", m.residues, "residues"), ("atoms", m.atoms, "atoms"), ("cyx", m.cyx, "residues"),
                ("e0_per_residue", m.per_residue(m.e0), "kJ/mol"),
                ("e0_nonbonded_per_residue", m.per_residue(m.e0_nonbonded), "kJ/mol"),
                ("e1_per_residue", m.per_residue(m.e1), "kJ/mol"), ("iterations", m.iterations, "iterations"),
                ("rms_force_final", m.rms_force, "kJ/mol/nm"), ("rmsd_moved_heavy", m.rmsd_moved, "Å"),
                ("minimise_s", m.seconds, "s"), ("failed", int(not m.converged), "structures"))]
            if kind == REFERENCE and "heavy_atoms_added" in m.extra:
                rows.append(("simulation_ready_structure", conf, "heavy_atoms_added", m.extra["heavy_atoms_added"],
                             "atoms"))
            if kind == OURS and r["gmx"] is not None:
                rows.append(("simulation_ready_structure", conf, "pdb2gmx_disulfides", len(r["gmx"]["links"]),
                             "bonds"))
    for kind in (OURS, REFERENCE):
        s = summarise(results, kind)
        units = {"structures": "structures", "failed": "structures", "exceptions": "structures",
                 "not_converged": "structures", "cyx": "residues", "minimise_s": "s", "median_rmsd_moved": "Å",
                 "median_iterations": "iterations"}
        rows += [("simulation_ready", f"{dataset}|{labels[kind]}|{setup}", k, v, units.get(k, "kJ/mol"))
                 for k, v in s.items()]
    if any(r["gmx"] is not None for r in results):
        rows.append(("simulation_ready", f"{dataset}|{labels[OURS]}|{setup}", "pdb2gmx_disulfides",
                     sum(len(r["gmx"]["links"]) for r in results if r["gmx"]), "bonds"))
    return rows


def _cell(m: Minimisation) -> str:
    return "ok" if m.converged else f"FAILED ({m.failure})"


def table_line(r: dict) -> str:
    o, f = r[OURS], r[REFERENCE]
    g = "–" if r["gmx"] is None else str(len(r["gmx"]["links"])) + ("" if r["gmx"]["rc"] == 0 else " (rc≠0)")
    return (f"| {r['target']} | {o.residues} | {o.cyx} / {f.cyx} | {g} | {o.per_residue(o.e0):,.4g} | "
            f"{f.per_residue(f.e0):,.4g} | {o.per_residue(o.e1):,.1f} | {f.per_residue(f.e1):,.1f} | "
            f"{o.rmsd_moved:.2f} | {f.rmsd_moved:.2f} | {o.iterations} / {f.iterations} | {_cell(o)} | {_cell(f)} | "
            f"{o.worst_start_atom} |")


TABLE_HEADER = ("| target | residues | CYX ours / ref | pdb2gmx SS ours | E0/res ours | E0/res ref | E/res ours | "
                "E/res ref | RMSD moved ours (Å) | ref (Å) | iterations ours / ref | ours | ref | largest start "
                "force (ours) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


SUMMARY_COLUMNS = [("structures", "structures", "{:.0f}"), ("failed", "failed", "{:.0f}"),
                   ("exceptions", "of which exceptions", "{:.0f}"), ("not_converged", "not converged", "{:.0f}"),
                   ("median_e0_per_residue", "median E0/res", "{:,.1f}"),
                   ("median_e1_per_residue", "median E/res", "{:,.1f}"),
                   ("median_rmsd_moved", "median RMSD moved (Å)", "{:.2f}"),
                   ("median_iterations", "median iterations", "{:.0f}"), ("cyx", "CYX", "{:.0f}"),
                   ("pdb2gmx_disulfides", "pdb2gmx SS", "{:.0f}"), ("minimise_s", "minimiser s", "{:.0f}")]
STRUCTURE_COLUMNS = [("residues", "residues", "{:.0f}"), ("cyx", "CYX", "{:.0f}"),
                     ("pdb2gmx_disulfides", "pdb2gmx SS", "{:.0f}"), ("e0_per_residue", "E0/res", "{:,.4g}"),
                     ("e0_nonbonded_per_residue", "E0/res nonbonded", "{:,.4g}"),
                     ("e1_per_residue", "E/res", "{:,.1f}"), ("rmsd_moved_heavy", "RMSD moved (Å)", "{:.2f}"),
                     ("iterations", "iterations", "{:.0f}"), ("rms_force_final", "final RMS force", "{:.2f}"),
                     ("heavy_atoms_added", "heavy atoms added", "{:.0f}"), ("failed", "failed", "{:.0f}")]


def readme_section(latest: dict, order: list) -> list[str]:
    """Markdown lines for benchmarks/README.md from results.csv's latest rows (``report.read_latest``): the summary
    and the per-structure table of the newest set/setup run ([] when there is none)."""
    from report import esc, fmt, provenance

    summary = [k for k in order if k[0] == "simulation_ready"]
    if not summary:
        return []
    dataset, _, setup = summary[-1][1].split("|", 2)
    keys = [k for k in order if k[0].startswith("simulation_ready") and k[1].split("|", 1)[0] == dataset
            and k[1].endswith("|" + setup)]
    kinds = list(dict.fromkeys(c.split("|")[1] for b, c, _ in keys if b == "simulation_ready"))
    targets = list(dict.fromkeys(c.split("|")[1] for b, c, _ in keys if b == "simulation_ready_structure"))

    def row(bench, conf, columns):
        return " | ".join(fmt(latest[(bench, conf, m)]["value"] if (bench, conf, m) in latest else None, f)
                          for m, _, f in columns)

    lines = ["## Readiness for simulation: OpenMM amber14 minimisation (benchmarks/simulation_ready.py)", "",
             f"{esc(dataset)}: `backmap --hydrogens` outputs and the references protonated by OpenMM "
             "(PDBFixer adds missing heavy atoms, `Modeller.addHydrogens` the hydrogens), minimised the same way: "
             f"{esc(setup.replace('|', ', '))}. Converged: final RMS force ≤ the tolerance within the cap; every "
             "failure is counted. Energies per residue in kJ/mol, E0 at the start and E after minimisation; RMSD "
             "moved: heavy atoms, no superposition; CYX: residues amber14 matched to CYX; pdb2gmx SS: disulfides "
             f"`gmx pdb2gmx -ignh` links (– without gmx). Rows: {provenance([latest[k] for k in keys])}.", "",
             "| kind | " + " | ".join(h for _, h, _ in SUMMARY_COLUMNS) + " |",
             "|---" * (len(SUMMARY_COLUMNS) + 1) + "|"]
    lines += [f"| {esc(k)} | {row('simulation_ready', f'{dataset}|{k}|{setup}', SUMMARY_COLUMNS)} |" for k in kinds]
    lines += ["", "| target | kind | " + " | ".join(h for _, h, _ in STRUCTURE_COLUMNS) + " |",
              "|---" * (len(STRUCTURE_COLUMNS) + 2) + "|"]
    lines += [f"| {esc(t)} | {esc(k)} | "
              f"{row('simulation_ready_structure', f'{dataset}|{t}|{k}|{setup}', STRUCTURE_COLUMNS)} |"
              for t in targets for k in kinds]
    return lines + [""]


def main(argv=None) -> int:
    ap = set_parser(__doc__)
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="RMS force to stop at, kJ/mol/nm (10)")
    ap.add_argument("--max-iterations", type=int, default=MAX_ITERATIONS, help="L-BFGS iteration cap (2000)")
    ap.add_argument("--implicit", choices=sorted(IMPLICIT), default=None,
                    help="add OpenMM's implicit solvent (slow on CPU: a CustomGBForce); default vacuum")
    ap.add_argument("--no-gmx", action="store_true", help="do not run gmx pdb2gmx even if it is on PATH")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any minimisation failed")
    args = ap.parse_args(argv)
    pdbs = set_pdbs(args)
    if not pdbs:
        return 2
    gmx = None if args.no_gmx else shutil.which("gmx")
    ff = forcefield(args.implicit)
    setup = (f"amber14 {args.implicit or 'vacuum'}|tol={args.tolerance:g} kJ/mol/nm|cap={args.max_iterations}"
             f"|threads={args.threads}")
    labels = {OURS: f"ldb-hpc --model {args.model} --hydrogens",
              REFERENCE: "reference (PDBFixer + Modeller.addHydrogens)"}
    dataset = Path(args.data).name + ("" if args.limit is None else f" (first {len(pdbs)})")
    print(f"{len(pdbs)} structures, {setup.replace('|', ', ')}; pdb2gmx: {gmx or 'not found'}", flush=True)
    print(TABLE_HEADER, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for pdb in pdbs:
            results.append(run_target(pdb, work, ff, args.model, args.tolerance, args.max_iterations, args.threads,
                                      gmx))
            print(table_line(results[-1]), flush=True)
    sha, mach, date = append_rows(csv_rows(results, dataset, setup, labels), args.results)
    print()
    for kind in (OURS, REFERENCE):
        s = summarise(results, kind)
        print(f"{labels[kind]}: {s['structures'] - s['failed']}/{s['structures']} converged, {s['failed']} failed "
              f"({s['exceptions']} exceptions, {s['not_converged']} not converged); median E0 "
              f"{s['median_e0_per_residue']:,.1f}, E {s['median_e1_per_residue']:,.1f} kJ/mol per residue; median "
              f"heavy-atom RMSD moved {s['median_rmsd_moved']:.2f} Å; {s['cyx']} CYX; minimiser "
              f"{s['minimise_s']:.0f} s", flush=True)
    print(f"Rows appended to {args.results} ({sha}, {mach}, {date}).")
    failed = sum(summarise(results, k)["failed"] for k in (OURS, REFERENCE))
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
