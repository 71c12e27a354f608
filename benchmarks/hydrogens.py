#!/usr/bin/env python
"""`backmap --hydrogens` judged by OpenMM: amber14 takes every output as written, and a short minimisation converges.

For every structure of a set (default: the 24 CASP12 targets of ../shared/data/test/casp12): `ldb-hpc coarsen`
makes the CA trace; `ldb-hpc backmap --hydrogens -o T.pdb` rebuilds it with every hydrogen; OpenMM reads T.pdb
(`openmm.app.PDBFile`), must keep every atom's residue and atom name as written (nothing renamed) and build an
amber14 system with `ForceField("amber14-all.xml").createSystem(topology)` (nothing added: the system has one
particle per atom of the file); then `LocalEnergyMinimizer.minimize` from our coordinates must end with a finite
energy below the start's. The same trace is backmapped without --hydrogens for the throughput comparison, and
the bundled example trajectory (40 frames) is backmapped both ways for a trajectory-sized rate.

Rows (benchmark "hydrogens") are appended to benchmarks/results.csv; a table goes to stdout.

    python benchmarks/hydrogens.py [--data ../shared/data/test/casp12] [--model default] [--iterations 200]
    python benchmarks/hydrogens.py --limit 2          # the first two targets only (a smoke run)

OpenMM is a test/benchmark dependency (pip install openmm; `make test` installs it), not a runtime one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from results_csv import RESULTS, append_rows

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LDB_HPC_SHARED_DATA", REPO.parent / "shared" / "data"))
FORCEFIELD = "amber14-all.xml"


def _cli(argv: list[str]) -> str:
    """Run ``ldb-hpc ARGV`` in this process (start-up paid once); returns stdout; RuntimeError with stderr."""
    from ldb_hpc.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"ldb-hpc {' '.join(map(str, argv))} failed: {err.getvalue().strip()}")
    return out.getvalue()


def pdb_atom_names(path) -> list[tuple[str, str]]:
    """(residue name, atom name) of every ATOM/HETATM record of the first model of a PDB file, as written."""
    names = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("ENDMDL"):
                break
            if line.startswith(("ATOM", "HETATM")):
                names.append((line[17:20].strip(), line[12:16].strip()))
    return names


def cpu_context(system, positions, threads: int = 1):
    """An OpenMM Context of ``system`` on the CPU platform with ``threads`` threads, at ``positions``."""
    import openmm

    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": str(threads)})
    context.setPositions(positions)
    return context


def potential_energy(context, groups=-1) -> float:
    """Potential energy of ``context`` in kJ/mol (of the force groups ``groups``; -1: all)."""
    import openmm.unit as unit

    state = context.getState(getEnergy=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def openmm_check(pdb_path, iterations: int = 200, threads: int = 1) -> dict:
    """Load ``pdb_path`` with OpenMM, build an amber14 System and minimise from its coordinates.

    Returns {"atoms", "renamed" (atoms whose residue/atom name OpenMM changed), "system_ok", "error",
    "disulfides" (SG–SG bonds in OpenMM's topology), "e0", "e1" (kJ/mol), "minimised" (finite and lower),
    "minimise_s"}. createSystem uses CutoffNonPeriodic at 1 nm so that minimising a 600-residue protein stays
    short; the template matching it is judged on does not depend on the nonbonded method.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(pdb_path))
    written = pdb_atom_names(pdb_path)
    read = [(a.residue.name, a.name) for a in pdb.topology.atoms()]
    out = {"atoms": len(written), "renamed": sum(w != r for w, r in zip(written, read)) + abs(len(written) - len(read)),
           "disulfides": sum(1 for b in pdb.topology.bonds() if b[0].name == "SG" and b[1].name == "SG"),
           "system_ok": False, "error": "", "e0": math.nan, "e1": math.nan, "minimised": False, "minimise_s": 0.0}
    try:
        system = app.ForceField(FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.CutoffNonPeriodic,
                                                         nonbondedCutoff=1.0 * unit.nanometer, constraints=None)
    except Exception as exc:  # noqa: BLE001 - the message is the result
        out["error"] = " ".join(str(exc).split())[:300]
        return out
    out["system_ok"] = system.getNumParticles() == len(written)
    if not out["system_ok"]:
        out["error"] = f"system has {system.getNumParticles()} particles, the file {len(written)} atoms"
        return out
    context = cpu_context(system, pdb.positions, threads)
    out["e0"] = potential_energy(context)
    t0 = time.perf_counter()
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, iterations)
    out["minimise_s"] = time.perf_counter() - t0
    out["e1"] = potential_energy(context)
    out["minimised"] = bool(math.isfinite(out["e1"]) and out["e1"] < out["e0"])
    return out


def _backmap_rate(argv: list[str], summary_path: Path) -> tuple[float, float]:
    """Run one backmap; returns (wall s of the command, residue-frames) from its summary."""
    t0 = time.perf_counter()
    _cli(argv)
    wall = time.perf_counter() - t0
    with open(summary_path) as fh:
        s = json.load(fh)
    return wall, s["frames"] * s["samples"] * s["residues"]


def run_target(pdb: Path, work: Path, model: str, iterations: int, threads: int) -> dict:
    name = pdb.stem
    cg = work / f"{name}.cg.h5"
    _cli(["coarsen", pdb, "-o", cg, "--overwrite"])
    common = ["--model", model, "--threads", threads, "--overwrite", "--no-progress"]
    heavy = work / f"{name}.aa.pdb"  # the same format both ways: the rates compare like with like
    wall_heavy, rf = _backmap_rate(["backmap", cg, "-o", heavy, *common], Path(f"{heavy}.summary.json"))
    out = work / f"{name}.H.pdb"
    wall_h, _ = _backmap_rate(["backmap", cg, "-o", out, "--hydrogens", *common], Path(f"{out}.summary.json"))
    result = {"target": name, "residue_frames": rf, "wall_heavy": wall_heavy, "wall_h": wall_h}
    result.update(openmm_check(out, iterations, threads))
    return result


def example_rates(work: Path, model: str, threads: int) -> tuple[float, float]:
    """Residue-frames/s of the bundled 40-frame example to HDF5, without and with --hydrogens (the summaries'
    rates; the best of three alternating runs each, as other work on the machine comes and goes)."""
    rates = {"heavy": 0.0, "h": 0.0}
    for _ in range(3):
        for extra, tag in (((), "heavy"), (("--hydrogens",), "h")):
            out = work / f"example.{tag}.h5"
            _cli(["backmap", REPO / "examples" / "example.cg.h5", "-o", out, "--model", model, "--threads", threads,
                  "--overwrite", "--no-progress", *extra])
            with open(f"{out}.summary.json") as fh:
                rates[tag] = max(rates[tag], json.load(fh)["residue_frames_per_s"])
    return rates["heavy"], rates["h"]


def set_parser(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark over a set of PDB files (this one, simulation_ready.py): --data, --model,
    --threads, --limit, --work, --results."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA / "test" / "casp12"), help="a folder of PDB files (default: CASP12)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=1, help="backmap --threads and OpenMM CPU threads (1)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N structures")
    ap.add_argument("--work", default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--results", default=str(RESULTS))
    return ap


def set_pdbs(args) -> list[Path]:
    """The first --limit PDB files of --data by name; [] after an error line on stderr when there is none."""
    pdbs = sorted(Path(args.data).glob("*.pdb"))[: args.limit]
    if not pdbs:
        print(f"error: no .pdb files in {args.data}", file=sys.stderr)
    return pdbs


def main(argv=None) -> int:
    ap = set_parser(__doc__)
    ap.add_argument("--iterations", type=int, default=200, help="LocalEnergyMinimizer maxIterations (default 200)")
    args = ap.parse_args(argv)
    pdbs = set_pdbs(args)
    if not pdbs:
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        # Warm-up (model load, first-call costs), so that neither timed variant pays it.
        _cli(["coarsen", pdbs[0], "-o", work / "warmup.cg.h5", "--overwrite"])
        _cli(["backmap", work / "warmup.cg.h5", "-o", work / "warmup.aa.h5", "--model", args.model, "--overwrite",
              "--no-progress", "--hydrogens"])
        print("| target | atoms | renamed | amber14 | SS | E0 kJ/mol | E kJ/mol | minimised |")
        print("|---|---|---|---|---|---|---|---|")
        for pdb in pdbs:
            r = run_target(pdb, work, args.model, args.iterations, args.threads)
            results.append(r)
            print(f"| {r['target']} | {r['atoms']} | {r['renamed']} | {'yes' if r['system_ok'] else r['error']} | "
                  f"{r['disulfides']} | {r['e0']:.4g} | {r['e1']:.4g} | {'yes' if r['minimised'] else 'NO'} |",
                  flush=True)
        ex_heavy, ex_h = example_rates(work, args.model, args.threads)
    n = len(results)
    accepted = sum(r["system_ok"] and r["renamed"] == 0 for r in results)
    minimised = sum(r["minimised"] for r in results)
    rf = sum(r["residue_frames"] for r in results)
    rate_heavy, rate_h = rf / sum(r["wall_heavy"] for r in results), rf / sum(r["wall_h"] for r in results)
    conf = f"{Path(args.data).name}|ldb-hpc --model {args.model} --threads {args.threads}"
    ex_conf = f"example 40 frames|ldb-hpc --model {args.model} --threads {args.threads}"
    rows = [
        ("hydrogens", conf, "structures", n, ""),
        ("hydrogens", conf, "openmm_amber14_accepted", accepted, "structures"),
        ("hydrogens", conf, f"openmm_minimised_{args.iterations}_iterations", minimised, "structures"),
        ("hydrogens", conf, "disulfides", sum(r["disulfides"] for r in results), "bonds"),
        ("hydrogens", conf, "residue_frames_per_s_heavy", rate_heavy, "residue-frames/s"),
        ("hydrogens", conf, "residue_frames_per_s_hydrogens", rate_h, "residue-frames/s"),
        ("hydrogens", ex_conf, "residue_frames_per_s_heavy", ex_heavy, "residue-frames/s"),
        ("hydrogens", ex_conf, "residue_frames_per_s_hydrogens", ex_h, "residue-frames/s"),
    ]
    sha, mach, date = append_rows(rows, args.results)
    print(f"\n{accepted}/{n} accepted by amber14 as written, {minimised}/{n} minimised "
          f"({args.iterations} iterations); per structure (one frame, start-up included): {rate_heavy:,.0f} "
          f"residue-frames/s heavy, {rate_h:,.0f} with hydrogens; example trajectory: {ex_heavy:,.0f} heavy, "
          f"{ex_h:,.0f} with hydrogens. Rows appended to {args.results} ({sha}, {mach}, {date}).")
    return 0 if accepted == n and minimised == n else 1


if __name__ == "__main__":
    sys.exit(main())
