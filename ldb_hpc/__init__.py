"""ldb-hpc: Latent Diffusion Backmapping of coarse-grained protein trajectories, built for HPC."""

__version__ = "0.1.0"
