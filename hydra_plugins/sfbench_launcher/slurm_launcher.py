"""`hydra/launcher=slurm`: hydra-submitit-launcher's Slurm launcher (one job array per sweep) that knows which runs of a
sweep need a job — finished runs are not submitted again, runs still queued or running from an earlier launch are
waited for, not submitted twice. Settings: `configs/hydra/launcher/slurm.yaml`; requeue: slurm/README.md.

Hydra discovers this class by scanning the `hydra_plugins` namespace package (any concrete `Launcher` subclass in a
module under it is a plugin); it is installed with sfbench (pyproject.toml). This module is imported by every Hydra
start-up's plugin scan, so it imports nothing beyond Hydra and the submitit plugin at module level.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hydra_plugins.hydra_submitit_launcher import submitit_launcher


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's Slurm launcher (one job array per sweep) that knows which runs need a job.

    Before submitting, each job's run directory is looked at: a finished run (completed, diverged) is not
    submitted again — a relaunched sweep would otherwise spend a queue slot and a Python start-up per finished
    run only for the Trainer to skip it; a run whose Slurm job from an earlier launch is still queued or running
    (the launcher was killed, its jobs were not) is not submitted twice — two jobs would write one run
    directory — but waited for like the new ones. The rest is submitted as one array, and each job's id is
    written to RUN/slurm.json. `launch` is the plugin's (v1.2) with these steps added: the plugin submits and
    waits in one method, so it can't be extended in between.

    While it waits (`watch.wait_for_jobs`) it prints a status line now and then (queued / running / done, with
    Slurm's pending reasons), and when Slurm says a job can never start (PartitionConfig, a per-job QOS limit, …)
    it cancels what this launch submitted and exits 2 with one line naming the reason and the requested resource
    against what the partition has. A run whose summary.json is damaged stops the launch before anything is
    submitted (exit 2, naming the file); sbatch refusing the array is one line too.
    """

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from submitit.slurm.slurm import SlurmJob

        from sfbench.cli.sweep import FINISHED, live_slurm_job, write_slurm_record
        from sfbench.cli.validate import EXIT_BAD_INPUT
        from sfbench.tracking import read_summary
        from sfbench.tracking.run_record import RecordDamaged

        from .watch import Unschedulable, wait_for_jobs

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        returns: list = [None] * len(job_overrides)
        waiting, submit, finished, queue = [], [], 0, {}
        for pos, overrides in enumerate(job_overrides):
            idx = initial_job_idx + pos
            run_dir = self._run_dir(overrides, idx)
            try:
                summary = read_summary(run_dir) if run_dir is not None else None
            except RecordDamaged as err:
                print(f"sfbench: error: {err} (nothing was submitted)", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            if summary and summary.get("status") in FINISHED:
                print(f"sfbench: {run_dir} already finished ({summary['status']}); not submitted again",
                      file=sys.stderr)
                returns[pos] = self._finished(overrides, summary)
                finished += 1
                continue
            live = live_slurm_job(run_dir, queue)
            if live is not None:
                print(f"sfbench: {run_dir} is still {live['state'].lower()} as Slurm job {live['job_id']} "
                      f"(an earlier launch); waiting for it instead of submitting it again", file=sys.stderr)
                waiting.append((pos, SlurmJob(folder=live["folder"], job_id=live["job_id"], tasks=[0])))
                continue
            submit.append((pos, idx, list(overrides), run_dir))
        print(f"sfbench: sweep {sweep_dir}: {len(job_overrides)} runs — {finished} finished, "
              f"{len(waiting)} still in Slurm from an earlier launch, {len(submit)} to submit", file=sys.stderr)
        if submit:
            import submitit

            executor = self._executor()
            folder = os.path.abspath(str(self.params["submitit_folder"]))
            for _, idx, overrides, _ in submit:
                submitit_launcher.log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                          for _, idx, overrides, _ in submit]
            try:
                jobs = executor.map_array(self, *zip(*job_params))
            except submitit.core.utils.FailedJobError as err:     # sbatch refused the array
                why = (str(err).strip().splitlines() or ["sbatch failed"])[-1]
                print(f"sfbench: error: sbatch refused the sweep's job array: {why} (hydra.launcher.* sets what "
                      f"the jobs ask for; sinfo shows what the partitions have)", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            for (pos, _, _, run_dir), job in zip(submit, jobs):
                if run_dir is not None:
                    write_slurm_record(run_dir, job.job_id, folder)
                waiting.append((pos, job))
            submitted = sorted({job.job_id.split("_")[0] for job in jobs})
        else:
            submitted = []
        watcher = job_state_watcher()
        for _, job in waiting:
            if watcher is not None:
                job.watcher = watcher
        try:
            results = wait_for_jobs(sorted(waiting, key=lambda item: item[0]), str(sweep_dir), submitted,
                                    dict(self.params))
        except Unschedulable as err:
            print(f"sfbench: error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        for pos, result in results.items():
            returns[pos] = result
        return returns

    def __call__(self, *args, **kwargs):
        """The job's entry (in the Slurm job): stop signals are taken from here on (sfbench.cli.requeue), so a burst
        during start-up never reaches submitit's handler twice."""
        from sfbench.cli.requeue import stop_signals

        stop_signals()
        return super().__call__(*args, **kwargs)

    def _executor(self):
        """The plugin's executor set-up (BaseSubmititLauncher.launch), unchanged."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
                                         if "max_num_timeout" in self.params else {})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        return executor

    def _run_dir(self, overrides, idx: int) -> Path | None:
        """The directory the job will train in: hydra.sweep.dir / hydra.sweep.subdir of its own config, resolved
        as Hydra's run_job does. None when it can't be known here (a subdir using ${hydra:job.id}, …)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf, open_dict

        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config.hydra.job):
                config.hydra.job.num = idx
            previous = HydraConfig.instance().cfg
            HydraConfig.instance().set_config(config)
            try:
                return Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                    OmegaConf.select(config, "hydra.sweep.subdir"))
            finally:
                HydraConfig.instance().cfg = previous
        except Exception:       # noqa: BLE001 — not knowing only means the run is submitted
            return None

    def _finished(self, overrides, summary: dict):
        from hydra.core.utils import JobReturn, JobStatus

        from sfbench.cli.sweep import sweep_value

        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, working_dir=os.getcwd(),
                         task_name=str(self.config.hydra.job.name), _return_value=sweep_value(summary))


def job_state_watcher():
    """None where Slurm keeps accounting (submitit asks sacct how its jobs are doing). On a cluster without it —
    slurm/local-cluster.sh runs no slurmdbd — sacct fails on every call and submitit, not knowing a job's state,
    would wait forever for a job that died without writing its result; this watcher asks squeue instead (which
    remembers finished jobs for MinJobAge seconds), so such a job ends the sweep with submitit's usual error."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none", config, re.MULTILINE):
        return None

    class SqueueWatcher(SlurmInfoWatcher):
        def _make_command(self):
            ids = {x.split("_")[0] for x in self._registered - self._finished}
            return ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(sorted(ids))] if ids else None

        def read_info(self, string):
            text = string.decode() if isinstance(string, bytes) else string
            info = {}
            for line in text.splitlines():
                job_id, state, nodes = (line.split("|") + ["", ""])[:3]
                info[job_id] = {"JobID": job_id, "State": state, "NodeList": nodes}
            for job_id in self._registered - self._finished - set(info):    # gone from squeue: long finished
                info[job_id] = {"JobID": job_id, "State": "COMPLETED", "NodeList": ""}
            return info

    return SqueueWatcher(delay_s=60)
