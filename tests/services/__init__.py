"""Real services the tests start for themselves (a one-node SLURM cluster, ...), each under a temporary folder."""
