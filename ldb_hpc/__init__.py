"""ldb-hpc: Latent Diffusion Backmapping of coarse-grained protein trajectories, built for HPC."""

from ldb_hpc.version import __version__

__all__ = ["__version__", "backmap"]


def backmap(traj, samples: int = 1, seed: int = 0, model=None, **kwargs):
    """Backmap an ``mdtraj.Trajectory`` of CA beads → all-heavy-atom ``mdtraj.Trajectory`` (see ldb_hpc.api)."""
    from ldb_hpc.api import backmap as _backmap

    return _backmap(traj, samples=samples, seed=seed, model=model, **kwargs)
