"""The one backmap engine: a typed job (job.py), frame sources by coarse-grained mapping (sources.py), the compute
step (compute.py), sinks (sinks.py), the read → compute → write pipeline (pipeline.py) and the device choice
(devices.py). The CLI's runs (ldb_hpc.runtime) and the Python API (ldb_hpc.api) are adapters over it."""
