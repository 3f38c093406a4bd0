"""sfbench's Hydra plugins: `hydra/launcher=slurm` (`slurm_launcher.py`: hydra-submitit-launcher's Slurm launcher that
knows which runs of a sweep still need a job) and `hydra/sweeper=grid` (`grid_sweeper.py`: the basic sweeper with
limits per choice). Hydra finds them by its own plugin discovery (the `hydra_plugins` namespace package); their
settings are in `configs/hydra/launcher/slurm.yaml` and `configs/hydra/sweeper/grid.yaml`."""
