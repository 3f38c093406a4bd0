"""The Slurm launcher's wait (hydra_plugins/sfbench_launcher/watch.py) without a cluster: which pending reasons mean
"never", what the message says against scontrol's own output format, status lines, cancelling on a stop.
The same on the real local cluster: tests/test_slurm.py."""

from __future__ import annotations

import io

import pytest

from hydra_plugins.sfbench_launcher import watch

# `scontrol -o show …` lines as Slurm 22.05 prints them (values with spaces, as OS=… here, included)
NODE = ("NodeName=vm Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=4.10 AvailableFeatures=(null) "
        "Gres=(null) NodeAddr=127.0.0.1 Version=22.05.8 OS=Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0  "
        "RealMemory=21695 AllocMem=0 State=IDLE Partitions=debug")
JOB = ("JobId=27 ArrayJobId=27 ArrayTaskId=0 JobName=sfbench JobState=PENDING Reason=PartitionConfig Dependency=(null) "
       "TimeLimit=04:00:00 Partition=debug NumNodes=1 NumCPUs=4 NumTasks=1 CPUs/Task=4 ReqB:S:C:T=0:0:*:* "
       "TRES=cpu=4,mem=21695M,node=1,billing=4 MinCPUsNode=4 MinMemoryNode=0 MinTmpDiskNode=0 QOS=normal")


def test_parse_scontrol_keeps_values_with_spaces():
    node = watch.parse_scontrol(NODE)
    assert node["OS"] == "Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0" and node["RealMemory"] == "21695"
    job = watch.parse_scontrol(JOB)
    assert job["MinCPUsNode"] == "4" and job["CPUs/Task"] == "4" and job["TRES"] == "cpu=4,mem=21695M,node=1,billing=4"


@pytest.mark.parametrize("reason, never", [
    ("PartitionConfig", True), ("PartitionTimeLimit", True), ("PartitionNodeLimit", True), ("BadConstraints", True),
    ("QOSMaxCpuPerJobLimit", True), ("QOSMaxGRESPerJob", True), ("QOSMaxWallDurationPerJobLimit", True),
    ("AssocMaxWallDurationPerJobLimit", True), ("AssocMaxNodePerJobLimit", True), ("QOSMinGRES", True),
    ("InvalidQOS", True), ("InvalidAccount", True),
    # clear as other jobs end, or are no limit at all
    ("Resources", False), ("Priority", False), ("None", False), ("JobArrayTaskLimit", False), ("Dependency", False),
    ("BeginTime", False), ("QOSGrpCpuLimit", False), ("AssocGrpGRES", False), ("QOSMaxJobsPerUserLimit", False),
    ("QOSMaxCpuPerUserLimit", False), ("AssocMaxJobsLimit", False), ("PartitionDown", False), ("NodeDown", False),
])
def test_which_pending_reasons_mean_never(reason, never):
    assert watch.never_starts(reason) is never


def test_reqnodenotavail_is_never_only_for_nodes_that_do_not_exist():
    hostnames = {"gpu[1-2]": ["gpu1", "gpu2"], "vm": ["vm"]}.get
    exists = {"vm", "gpu1"}.__contains__
    assert watch.never_starts("ReqNodeNotAvail, UnavailableNodes:gpu[1-2]", exists, hostnames) is True
    assert watch.never_starts("ReqNodeNotAvail, UnavailableNodes:vm", exists, hostnames) is False   # down, exists


@pytest.mark.parametrize("text, minutes", [("30", 30), ("30:30", 30.5), ("04:00:00", 240), ("1-00:00:00", 1440),
                                           ("2-12", 3600), ("1-01:30", 1530), ("UNLIMITED", None), ("", None)])
def test_slurm_time_formats(text, minutes):
    assert watch._minutes(text) == minutes


def test_mismatches_name_the_setting_the_request_and_what_the_partition_has():
    part = watch.Partition("gpu", {"MaxTime": "1-00:00:00", "TotalNodes": "4", "MaxNodes": "UNLIMITED"},
                           [{"cpus": 32, "mem_mb": 256000, "gpus": watch._gpus("gpu:a100:4(S:0-1)"), "count": 4}])
    job = {"MinCPUsNode": "64", "MinMemoryNode": "300G", "TresPerNode": "gres:gpu:8", "NumNodes": "8",
           "TimeLimit": "2-00:00:00"}
    params = {"cpus_per_task": 64, "tasks_per_node": 1, "mem_gb": 300, "gpus_per_node": 8, "nodes": 8,
              "timeout_min": 2880}
    found = watch.mismatches(job, part, params)
    assert len(found) == 5
    assert found[0] == ("64 CPUs on one node (hydra.launcher.cpus_per_task=64 × tasks_per_node=1) but the largest node "
                        "of partition gpu has 32: set hydra.launcher.cpus_per_task=32 or less")
    assert "300.0 GB of memory on one node (hydra.launcher.mem_gb=300) but the largest node of partition gpu has " \
           "250.0 GB" == found[1]
    assert "8 GPUs per node (hydra.launcher.gpus_per_node=8)" in found[2] and "at most 4" in found[2]
    assert "8 nodes (hydra.launcher.nodes=8) but partition gpu allows 4" == found[3]
    assert "a time limit of 2880 min (hydra.launcher.timeout_min=2880) but partition gpu allows 1440 min" == found[4]
    fits = {"MinCPUsNode": "8", "MinMemoryNode": "0", "NumNodes": "1", "TimeLimit": "04:00:00"}
    assert watch.mismatches(fits, part, params) == []


class FakeJob:
    def __init__(self, job_id, result):
        self.job_id, self.result, self.finished = job_id, result, False

    def done(self, force_check=False):
        return self.finished

    def results(self):
        assert self.finished
        return [self.result]


def test_wait_prints_status_lines_and_collects_results_in_order(monkeypatch):
    jobs = [(0, FakeJob("5_0", "a")), (1, FakeJob("5_1", "b"))]
    timeline = [{"5_0": ("PENDING", "None"), "5_1": ("PENDING", "None")},
                {"5_0": ("RUNNING", "None"), "5_1": ("PENDING", "JobArrayTaskLimit")},
                {"5_0": ("COMPLETED", "None"), "5_1": ("RUNNING", "None")},
                {"5_1": ("COMPLETED", "None")}]
    calls = iter(timeline)

    def squeue(ids):
        states = next(calls)
        for _, job in jobs:
            job.finished = states.get(job.job_id, ("COMPLETED", ""))[0] == "COMPLETED"
        return states
    monkeypatch.setattr(watch, "squeue_states", squeue)
    clock = iter(range(0, 1000, 20))
    out = io.StringIO()
    results = watch.wait_for_jobs(jobs, "multirun/x", ["5"], out=out, clock=lambda: next(clock), sleep=lambda s: None)
    assert results == {0: "a", 1: "b"}
    assert out.getvalue().splitlines() == [
        "sfbench: sweep multirun/x: 2 Slurm jobs — 2 queued (None), 0 done",
        "sfbench: sweep multirun/x: 2 Slurm jobs — 1 queued (JobArrayTaskLimit), 1 running, 0 done",
        "sfbench: sweep multirun/x: 2 Slurm jobs — 1 running, 1 done"]


def test_wait_stops_and_cancels_when_a_job_can_never_start(monkeypatch):
    jobs = [(0, FakeJob("7_0", None)), (1, FakeJob("7_1", None)), (2, FakeJob("3_4", None))]   # 3_4: adopted
    monkeypatch.setattr(watch, "squeue_states", lambda ids: {"7_0": ("RUNNING", "None"), "7_1": ("PENDING", "None"),
                                                             "3_4": ("PENDING", "QOSMaxCpuPerJobLimit")})
    monkeypatch.setattr(watch, "explain", lambda job_id, reason, params: f"explained {job_id}")
    cancelled = []
    monkeypatch.setattr(watch, "cancel", lambda ids: cancelled.append(ids) or "Cancelled.")
    with pytest.raises(watch.Unschedulable) as stop:
        watch.wait_for_jobs(jobs, "multirun/x", ["7"], out=io.StringIO(), sleep=lambda s: None)
    assert str(stop.value) == ("Slurm can never start job 3_4 of sweep multirun/x (QOSMaxCpuPerJobLimit): explained "
                               "3_4. Cancelled.")
    assert cancelled == [["7", "3_4"]]
