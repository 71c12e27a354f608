"""The training stages of the LDB model (docs/MODEL.md): one enum, branched on by member.

A member's value is the word of ``ldb-hpc train STAGE`` and the ``stage`` string that a trained checkpoint's
``config.json`` stores in its metadata; strings become members only where they come in (:meth:`Stage.parse`,
:meth:`Stage.of_metadata`). No torch here: the CLI builds its parser from this module.
"""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    TOKENIZER = "tokenizer"  # stage 1: encoder, codebook and decoder learn the round trip
    DIFFUSION = "diffusion"  # stage 2: the denoiser learns the frozen tokenizer's latents (needs --init)
    REFINE = "refine"  # stage 3: the sampling encoder, context and decoder learn on sampled latents (needs --init)
    PLACEMENT = "placement"  # the CA placer of another coarse-grained mapping (--cg; ldb_hpc.model.placement)

    def __str__(self) -> str:  # the word, in f-strings too, on every Python version
        return self.value

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """The CLI's choices, in stage order."""
        return tuple(s.value for s in cls)

    @classmethod
    def parse(cls, word: str | Stage) -> Stage:
        """The member of a CLI word or stored string (a member is returned as is); ValueError for other words."""
        return cls(word)

    @classmethod
    def of_metadata(cls, metadata: dict) -> Stage | None:
        """The stage a checkpoint's metadata records, or None when it records none this ldb-hpc knows."""
        word = metadata.get("stage") if isinstance(metadata, dict) else None
        return cls(word) if word in cls.words() else None


__all__ = ["Stage"]
