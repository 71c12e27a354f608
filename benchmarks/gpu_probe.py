#!/usr/bin/env python
"""One `ldb-hpc backmap` in this process, measured from the outside: peak GPU memory and host syncs (gpu_check.py).

    python benchmarks/gpu_probe.py --json OUT.json [--syncs] -- backmap IN -o OUT.h5 [backmap options]

Runs ``ldb_hpc.cli.main.main(argv)`` and writes {"rc", "peak_gpu_bytes", "gpu_total_bytes", "syncs",
"sync_method"} to OUT.json; exits with the command's status. ``peak_gpu_bytes`` is
``torch.cuda.max_memory_allocated`` (the largest over the visible GPUs; null when CUDA was not used). With
``--syncs`` the host synchronisations are counted: on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, one
warning per synchronising call; on the CPU, where nothing synchronises, with :class:`ldb_hpc.ops.audit.HostTraffic`
(the ops that would: ``.item()``, ``nonzero``, boolean indexing, ``.cpu()``, ...). Both slow the run down: the
counting runs are not the timed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings


@contextlib.contextmanager
def count_cuda_syncs(counter: list):
    """Count the warnings of torch.cuda.set_sync_debug_mode("warn") into counter[0]; every other warning is shown
    as usual. Patches warnings.showwarning (the record of catch_warnings would also swallow the others)."""
    import torch

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message).lower():
            counter[0] += 1
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = shown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="where to write the measurements")
    ap.add_argument("--syncs", action="store_true", help="count host synchronisations (slows the run)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the ldb-hpc arguments")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    device = command[command.index("--device") + 1] if "--device" in command else "auto"

    import torch

    from ldb_hpc.cli.main import main as ldb_hpc

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    syncs, method = None, None
    if args.syncs and cuda:
        counter = [0]
        with count_cuda_syncs(counter):
            rc = ldb_hpc(command)
        syncs, method = counter[0], "cuda sync debug mode"
    elif args.syncs:
        from ldb_hpc.ops.audit import HostTraffic

        with HostTraffic() as traffic:
            rc = ldb_hpc(command)
        syncs, method = traffic.syncs, "HostTraffic dispatch count"
    else:
        rc = ldb_hpc(command)
    peak = total = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        n = torch.cuda.device_count()
        peak = max(torch.cuda.max_memory_allocated(i) for i in range(n))
        total = max(torch.cuda.get_device_properties(i).total_memory for i in range(n))
    with open(args.json, "w") as fh:
        json.dump({"rc": rc, "peak_gpu_bytes": peak, "gpu_total_bytes": total, "syncs": syncs,
                   "sync_method": method}, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
