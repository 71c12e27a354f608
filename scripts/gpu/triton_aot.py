#!/usr/bin/env python
"""Compile every Triton kernel of the project for an NVIDIA GPU ahead of time: no GPU, no CUDA driver needed.

For each specialisation the code actually launches, not a hand-written list:

1. **capture** (a child process with TRITON_INTERPRET=1 and LDB_HPC_KERNELS=triton): small `ldb-hpc backmap` runs
   on a 24-residue piece of the bundled example (default model with a 2-frame and a 1-frame batch, --samples 4
   --hydrogens, --model ideal) go through the Triton kernels in the interpreter, and every launch
   ``kernel[grid](*args, **kwargs)`` of ldb_hpc._triton is recorded: tensors as dtype and 16-byte alignment, Python
   scalars as values, the launch options (enable_fp_fusion=False, ...) as given.
2. **compile**: each launch goes through Triton's own binder for the target (what the JIT does on the GPU: an int
   equal to 1 becomes a constant, 16-divisible ints and 16-byte-aligned pointers get ``tt.divisibility``), then
   ``triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", ARCH, 32))``: TTIR →
   TTGIR → LLVM → PTX → cubin with the ptxas bundled in the triton wheel. Each distinct specialisation once.
3. The specialisations listed in ``ldb_hpc._triton.aot`` whose constants no launch had are compiled too (marked
   ``listed``): branches no capture run takes (diffusion_kernel with HAS_NOISE=True, message_kernel with a runtime
   k) and any kernel the pipeline stops launching. A ``*_kernel`` of the op modules neither launched nor listed is
   a FAIL.

Reports one line per specialisation and one verdict per kernel: PASS/FAIL, registers, spills (ptxas -v, which
Triton runs anyway), shared memory and warps (the compiled metadata), compile seconds; exit 0 when every kernel
compiled. ``--json PATH`` writes the same as JSON. Works with triton 3.6 and 3.8 (the binder and _pack_args are
the JIT's own, private API: a triton that changes them fails here loudly, "FAIL (capture/bind)").

    python scripts/gpu/triton_aot.py [--arch 90] [--json PATH] [--launches PATH] [--keep-launches PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "example.cg.h5"
RESIDUES = 24  # SER PRO ... CYS ... HIS ...: a proline, a cysteine, every kernel's path
RUNS = {"default, batches of 2 and 1": (3, ["--batch-frames", "2"]),
        "--samples 4 --hydrogens": (2, ["--samples", "4", "--hydrogens"]),
        "--model ideal": (2, ["--model", "ideal"])}


# ---------------------------------------------------------------------------------------------------------------
# 1. capture (child process, interpreter)


def _encode(value):
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).replace("torch.", ""), "align": int(value.data_ptr() % 16)}
    if isinstance(value, bool) or value is None:
        return {"value": value}
    if isinstance(value, int) or (hasattr(value, "dtype") and "int" in str(value.dtype)):
        return {"int": int(value)}
    if isinstance(value, float) or hasattr(value, "dtype"):
        return {"float": float(value)}
    raise TypeError(f"launch argument of type {type(value).__name__} not recorded")


def _key(encoded: dict, constexpr: bool):
    """What the JIT specialises a value on: the value of a constexpr; the class of an int (1, 16-divisible, 32 or 64
    bits); the dtype and alignment of a tensor."""
    if "int" in encoded and not constexpr:
        v = encoded["int"]
        return "1" if v == 1 else "i64" if not -2**31 <= v < 2**31 else "d16" if v % 16 == 0 else "i32"
    if "float" in encoded and not constexpr:
        return "fp32"
    return json.dumps(encoded, sort_keys=True)


class Recorder:
    """Stands in for an interpreted kernel in its module: records each launch, then runs it."""

    def __init__(self, module: str, name: str, kernel, launches: dict):
        self.module, self.name, self.kernel, self.launches = module, name, kernel, launches
        params = inspect.signature(kernel.fn).parameters
        self.params = list(params)
        self.constexpr = {n for n, p in params.items() if "constexpr" in str(p.annotation)}

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            enc_args = [_encode(a) for a in args]
            enc_kwargs = {k: _encode(v) for k, v in kwargs.items()}
            key = (self.module, self.name, tuple(_key(e, n in self.constexpr) for e, n in zip(enc_args, self.params)),
                   tuple(sorted((k, _key(e, k in self.constexpr)) for k, e in enc_kwargs.items())))
            entry = self.launches.setdefault(repr(key), {"module": self.module, "kernel": self.name, "args": enc_args,
                                                         "kwargs": enc_kwargs, "launches": 0, "run": self.run})
            entry["launches"] += 1
            return self.kernel[grid](*args, **kwargs)

        return launch


def capture(out: Path) -> int:
    """Child process: patch every kernel of ldb_hpc._triton with a Recorder, run the backmaps of RUNS, write JSON."""
    import importlib

    import mdtraj as md

    from ldb_hpc._triton.ops import MODULES
    from ldb_hpc.cli.main import main as ldb_hpc

    launches: dict = {}
    recorders = []
    for short in MODULES:
        mod = importlib.import_module(f"ldb_hpc._triton.{short}")
        for name, obj in list(vars(mod).items()):
            if name.endswith("_kernel") and hasattr(obj, "fn") and getattr(obj.fn, "__module__", "") == mod.__name__:
                rec = Recorder(short, name, obj, launches)
                setattr(mod, name, rec)
                recorders.append(rec)
    with tempfile.TemporaryDirectory() as tmp:
        traj = md.load(str(EXAMPLE))
        for label, (frames, extra) in RUNS.items():
            src = Path(tmp) / f"in-{frames}.h5"
            if not src.exists():
                traj.atom_slice(range(RESIDUES))[:frames].save_hdf5(str(src))
            for rec in recorders:
                rec.run = label
            rc = ldb_hpc(["backmap", str(src), "-o", str(Path(tmp) / "out.h5"), "--device", "cpu", "--overwrite",
                          "--no-progress", *extra])
            if rc != 0:
                print(f"triton_aot: capture run '{label}' failed ({rc})", file=sys.stderr)
                return 1
    out.write_text(json.dumps({"kernels": [f"{r.module}.{r.name}" for r in recorders],
                               "launches": list(launches.values())}, indent=1))
    return 0


def run_capture(path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LDB_HPC_TRITON_DEVICE",)}
    env.update(TRITON_INTERPRET="1", LDB_HPC_KERNELS="triton")
    proc = subprocess.run([sys.executable, __file__, "--capture", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"capture failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------------
# 2. compile (this process, no interpreter)


def _decode(encoded: dict):
    import torch

    if "tensor" in encoded:
        dtype = getattr(torch, encoded["tensor"])
        size = torch.empty((), dtype=dtype).element_size()
        base = torch.empty(64 // size + 16, dtype=dtype)
        shift = (encoded["align"] - base.data_ptr() % 16) % 16 // size  # same 16-byte alignment as recorded
        return base[shift:]
    return encoded.get("value", encoded.get("int", encoded.get("float")))


def _ptxas_figures(log: str) -> dict:
    get = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else None  # noqa: E731
    return {"registers": get(r"Used (\d+) registers"), "spill_stores": get(r"(\d+) bytes spill stores"),
            "spill_loads": get(r"(\d+) bytes spill loads"), "stack_bytes": get(r"(\d+) bytes stack frame")}


def compile_one(kernel, args: list, kwargs: dict, target) -> tuple[str, dict]:
    """Bind and compile one launch as the JIT would; (specialisation key, figures). Raises on failure."""
    import triton
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    # what JITFunction.run adds before binding (triton 3.6 and 3.8 alike)
    kwargs = dict(kwargs, debug=kwargs.get("debug", kernel.debug) or knobs.runtime.debug)
    if hasattr(knobs.compilation, "instrumentation_mode"):
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    key = repr((sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items())))
    names = list(signature)
    aligned = {names[k[0]] for k, v in attrs.items() if len(k) == 1 and v}  # tt.divisibility 16
    ints = [n for n, t in signature.items() if t in ("i32", "i64")]
    ptrs = [n for n, t in signature.items() if t.startswith("*")]
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
    md = compiled.metadata
    figures = {"seconds": round(time.perf_counter() - t0, 2), "shared_bytes": getattr(md, "shared", None),
               "num_warps": getattr(md, "num_warps", None), "cubin_bytes": len(compiled.asm.get("cubin", b"")),
               "constexprs": {names[k[0]]: v for k, v in constexprs.items() if len(k) == 1},
               "ints_div16": [n for n in ints if n in aligned], "ptrs_unaligned": [n for n in ptrs if n not in aligned],
               **_ptxas_figures(log.getvalue())}
    return key, figures


def compile_all(capture_data: dict, arch: int) -> list[dict]:
    """Every captured launch, then every specialisation listed in ldb_hpc._triton.aot."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ldb_hpc._triton.ops import MODULES

    knobs.nvidia.dump_ptxas_log = True  # Triton runs ptxas -v; this prints its log, which compile_one reads
    target, results, seen = GPUTarget("cuda", arch, 32), [], set()
    for launch in capture_data["launches"]:
        name = f"{launch['module']}.{launch['kernel']}"
        kernel = getattr(importlib.import_module(f"ldb_hpc._triton.{launch['module']}"), launch["kernel"])
        row = {"kernel": name, "source": f"launched ({launch['run']})", "launches": launch["launches"]}
        try:
            key, figures = compile_one(kernel, [_decode(a) for a in launch["args"]],
                                       {k: _decode(v) for k, v in launch["kwargs"].items()}, target)
            if (name, key) in seen:
                continue
            seen.add((name, key))
            row.update(ok=True, **figures)
        except Exception as exc:  # noqa: BLE001 - every kernel is reported, not only the first failure
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip()[-1500:]}")
        results.append(row)
    from ldb_hpc._triton import aot

    launched = [r for r in results if r.get("ok")]
    for label, (fn, sig, const) in aot._jobs().items():  # also branches no run takes (HAS_NOISE=True, ...)
        name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
        if any(r["kernel"] == name and all(r["constexprs"].get(k) == v for k, v in const.items()) for r in launched):
            continue  # a launch compiled these constants already
        row = {"kernel": name, "source": f"listed in ldb_hpc._triton.aot ({label})"}
        try:
            t0, log = time.perf_counter(), io.StringIO()
            names = list(sig)
            src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
            with contextlib.redirect_stdout(log):
                compiled = triton.compile(src, target=target, options=dict(enable_fp_fusion=False))
            row.update(ok=True, seconds=round(time.perf_counter() - t0, 2), shared_bytes=compiled.metadata.shared,
                       num_warps=compiled.metadata.num_warps, cubin_bytes=len(compiled.asm.get("cubin", b"")),
                       constexprs=const, **_ptxas_figures(log.getvalue()))
        except Exception as exc:  # noqa: BLE001
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip()[-1500:]}")
        results.append(row)
    # every @triton.jit kernel of the op modules must appear (helpers such as common.sin compile inside kernels)
    done = {r["kernel"] for r in results}
    for short in MODULES:
        mod = importlib.import_module(f"ldb_hpc._triton.{short}")
        for name, obj in vars(mod).items():
            if (name.endswith("_kernel") and isinstance(obj, triton.runtime.JITFunction)
                    and obj.fn.__module__ == mod.__name__ and f"{short}.{name}" not in done):
                results.append({"kernel": f"{short}.{name}", "source": "neither launched nor listed", "ok": False,
                                "error": "no signature known: add it to ldb_hpc._triton.aot or launch it in a run"})
    return results


def report(results: list[dict], arch: int) -> str:
    import triton

    lines = [f"triton {triton.__version__}, sm_{arch}: {len(results)} specialisations"]
    for r in results:
        if r["ok"]:
            const = ", ".join(f"{k}={v}" for k, v in (r.get("constexprs") or {}).items())
            if r.get("ints_div16"):
                const += f"; 16 | {','.join(r['ints_div16'])}"
            if r.get("ptrs_unaligned"):
                const += f"; unaligned {','.join(r['ptrs_unaligned'])}"
            lines.append(f"  PASS  {r['kernel']:24s} regs {r['registers']}, spills {r['spill_stores']}/"
                         f"{r['spill_loads']} B, shared {r['shared_bytes']} B, warps {r['num_warps']}, "
                         f"{r['seconds']:.1f} s  [{const}]  {r['source']}")
        else:
            lines.append(f"  FAIL  {r['kernel']:24s} {r['source']}\n{r['error']}")
    kernels = sorted({r["kernel"] for r in results})
    verdicts = {k: all(r["ok"] for r in results if r["kernel"] == k) for k in kernels}
    lines.append(f"triton {triton.__version__} sm_{arch}: " + ", ".join(
        f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in verdicts.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability × 10 (default 90: H100/H200)")
    ap.add_argument("--json", default=None, help="write the per-specialisation results here")
    ap.add_argument("--launches", default=None, help="compile these captured launches (skip the capture)")
    ap.add_argument("--keep-launches", default=None, help="keep the capture's JSON here")
    ap.add_argument("--capture", default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.capture:
        return capture(Path(args.capture))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("error: unset TRITON_INTERPRET: the kernels must be defined for the compiler", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="triton-aot-") as tmp:
        # a cache of our own: every specialisation is compiled (and ptxas -v run) here and now, none reused
        os.environ["TRITON_CACHE_DIR"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        try:
            if args.launches:
                data = json.loads(Path(args.launches).read_text())
            else:
                data = run_capture(Path(args.keep_launches or Path(tmp) / "launches.json"))
        except Exception as exc:  # noqa: BLE001
            print(f"triton_aot: FAIL (capture/bind): {exc}", file=sys.stderr)
            return 1
        captured = time.perf_counter() - t0
        results = compile_all(data, args.arch)
    print(report(results, args.arch))
    print(f"triton_aot: capture {captured:.0f} s ({sum(x['launches'] for x in data['launches'])} launches, "
          f"{len(data['launches'])} distinct), compile {time.perf_counter() - t0 - captured:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
