"""What to compute, whatever the input and output: the typed job every backmap path shares.

A :class:`Job` names the model, the sampling (samples per frame, seed, steps, temperature), the residue naming
(``--map-residue``), the output extras (``--hydrogens``), the device and the batch size. The CLI's trajectory run,
its many-files run and the Python API (``ldb_hpc.backmap``) each build one and hand it to
:class:`ldb_hpc.engine.compute.Engine`; what is specific to them (run folders, ranks, files) stays in their
adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ldb_hpc.engine import devices
from ldb_hpc.errors import InputError


@dataclass(frozen=True)
class Job:
    """The options that decide what a backmap computes (not where it reads or writes).

    model: None or 'default' (the shipped model), 'ideal', a model directory, or an already loaded backmapper;
    samples: S rows per frame; seed: random seed (noise is keyed by (seed, frame, sample, …)); steps, temperature:
    sampling settings (None: the model's defaults); residue_map: {OLD: NEW} residue renames; hydrogens: also OXT
    and every hydrogen (docs/HYDROGENS.md); device: auto | cpu | cuda | cuda:N; batch_frames: frames per model call;
    threads: torch threads (None: the caller's default); cg: the coarse-grained mapping (ca, com), whose default
    model is the one shipped for it; disulfides: which Cys pairs are bonded — ``auto`` (decided from the backbone
    built for frame 0), ``none``, or a list ``A:12-A:40,B:3-B:77`` (chain:residue number pairs).
    """

    model: object = None
    samples: int = 1
    seed: int = 0
    steps: int | None = None
    temperature: float | None = None
    residue_map: dict = field(default_factory=dict)
    hydrogens: bool = False
    device: str = "auto"
    batch_frames: int = 64
    threads: int | None = None
    cg: str = "ca"  # the coarse-grained mapping of the input (ldb_hpc.engine.sources); it chooses the model too
    disulfides: str = "auto"  # auto (decided on frame 0, ldb_hpc.geometry.disulfides) | none | LIST (A:12-A:40,…)

    def check_ranges(self) -> None:
        """InputError naming the first count out of range (the CLI's option names)."""
        if self.batch_frames < 1:
            raise InputError(f"--batch-frames must be at least 1, got {self.batch_frames}")
        if self.samples < 1:
            raise InputError(f"--samples must be at least 1, got {self.samples}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")

    def check_device(self, local_rank: int = 0, local_size: int = 1) -> None:
        """InputError when this node cannot meet the device spec, or a GPU would run without the Triton kernels
        (ldb_hpc.ops.require_kernels), before any output is touched."""
        if devices.gpu_index(self.device, local_rank, local_size, devices.visible_gpus()) is not None:
            from ldb_hpc import ops

            ops.require_kernels("cuda")
