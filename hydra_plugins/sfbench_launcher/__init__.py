"""sfbench's Hydra launcher plugin (`hydra/launcher=slurm`): hydra-submitit-launcher's Slurm launcher that knows
which runs of a sweep still need a job. Hydra finds it by its own plugin discovery (the `hydra_plugins` namespace
package); `slurm_launcher.py` holds the class, `configs/hydra/launcher/slurm.yaml` its settings."""
