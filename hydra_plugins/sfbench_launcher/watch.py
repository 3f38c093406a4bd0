"""Waiting for a sweep's Slurm jobs: a status line now and then, and a stop for jobs Slurm can never start.

While the launcher waits it asks `squeue` about the sweep's jobs — every few seconds at first, then every 30 s — and
prints a line whenever the picture changes (at most every 10 s) and every 2 minutes anyway:
`sfbench: sweep multirun/x: 4 Slurm jobs — 2 queued (Resources), 1 running, 1 done` (Slurm's pending reasons in
brackets).

Some pending reasons mean the job will never start as asked: the request exceeds what the partition has
(`PartitionConfig`, `PartitionNodeLimit`, `PartitionTimeLimit`, `BadConstraints`), a per-job QOS or association
limit (`QOSMax…PerJob…`, `QOSMin…`, `AssocMax…PerJob…`, `InvalidQOS`, `InvalidAccount`, `AccountNotAllowed`), or
nodes that don't exist (`ReqNodeNotAvail` naming nodes `scontrol` doesn't know). Aggregate limits (`…Grp…`,
`…PerUser…`), `Resources`, `Priority` and the like clear as other jobs end and are only reported. For a never-start
reason the launch stops: the jobs this launch submitted are cancelled, and one line names the reason and the
requested resource against what the partition has (`explain`), with the launcher setting to change.

Imported by Hydra's plugin scan at every start-up (outside sys.modules): standard library only at module level, and
no @dataclass.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

NEVER = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidQOS",
         "InvalidAccount", "AccountNotAllowed", "QOSNotAllowed", "PartitionNotAvail"}
NEVER_PATTERN = re.compile(r"(QOS|Assoc)Max\w*Per(Job|Node)(Limit)?|QOSMin\w+")
NOT_DONE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "PREEMPTED", "SUSPENDED", "RESIZING",
            "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "UNKNOWN", "READY"}
POLL_S, POLL_MAX_S, LINE_EVERY_S, HEARTBEAT_S = 2.0, 30.0, 10.0, 120.0


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """{job id (array tasks as A_i): (state, reason)} for the arrays/jobs of `job_ids`; None if squeue failed."""
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    if out is None or out.returncode != 0:
        if out is not None and "Invalid job id" in out.stderr:      # all of them long gone
            return {}
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|", 2) + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def scontrol(kind: str, name: str) -> dict[str, str]:
    """`scontrol -o show KIND NAME` as {key: value} (empty when it fails)."""
    out = _run(["scontrol", "-o", "show", kind, name])
    if out is None or out.returncode != 0 or not out.stdout.strip():
        return {}
    return parse_scontrol(out.stdout.splitlines()[0])


def parse_scontrol(line: str) -> dict[str, str]:
    """One line of `scontrol -o` output: `Key=Value` pairs; a value may hold spaces (OS=Linux 6.1 #1 SMP …)."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"(?:^|\s)([A-Za-z][\w/:.]*)=(.*?)(?=\s+[A-Za-z][\w/:.]*=|\s*$)", line)}


def _node_exists(name: str) -> bool:
    out = _run(["scontrol", "-o", "show", "node", name])
    return out is not None and out.returncode == 0 and "not found" not in (out.stdout + out.stderr).lower()


def _hostnames(expr: str) -> list[str]:
    out = _run(["scontrol", "show", "hostnames", expr])
    return out.stdout.split() if out is not None and out.returncode == 0 else [expr]


def never_starts(reason: str, node_exists=_node_exists, hostnames=_hostnames) -> bool:
    """Whether a pending reason means the job can never start as asked (module docstring)."""
    head = reason.split(",")[0].strip()
    if head in NEVER or NEVER_PATTERN.fullmatch(head):
        return True
    if head == "ReqNodeNotAvail":
        match = re.search(r"UnavailableNodes:(\S+)", reason)
        nodes = [n for expr in (match.group(1).split(",") if match else []) for n in hostnames(expr) if n]
        return bool(nodes) and not all(node_exists(n) for n in nodes)
    return False


# -- what the job asks for against what the partition has ------------------------------------------------------------

def _mem_mb(text: str | None) -> float | None:
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", (text or "").strip())
    if not match:
        return None
    return float(match.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[match.group(2)]


def _minutes(text: str | None) -> float | None:
    """Slurm's time formats — M, M:S, H:M:S, D-H, D-H:M, D-H:M:S — in minutes; None for UNLIMITED and the like."""
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "PARTITION_LIMIT", "N/A"):
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
        day_minutes = float(days) * 1440 if days else 0.0
    except ValueError:
        return None
    if days:                        # D-H, D-H:M, D-H:M:S
        parts += [0.0] * (3 - len(parts))
    elif len(parts) == 1:           # M
        parts = [0.0, parts[0], 0.0]
    elif len(parts) == 2:           # M:S
        parts = [0.0, *parts]
    hours, minutes, seconds = parts[:3]
    return day_minutes + hours * 60 + minutes + seconds / 60


def _int(text: str | None) -> int | None:
    match = re.match(r"\d+", (text or "").strip())
    return int(match.group()) if match else None


def _gpus(text: str | None) -> int:
    """GPUs in a gres/TRES string: gres:gpu:2, gpu:a100:4(S:0-1), gres/gpu=2 …"""
    total = 0
    for match in re.finditer(r"gpu(?::[\w.-]+)*[:=](\d+)", text or ""):
        total += int(match.group(1))
    return total


class Partition:
    """A partition's limits (`scontrol show partition`) and node configurations (`sinfo`: cpus, mem_mb, gpus,
    count). A plain class: Hydra's plugin scan executes this module outside sys.modules, where @dataclass fails."""

    def __init__(self, name: str, info: dict, nodes: list[dict]):
        self.name, self.info, self.nodes = name, info, nodes

    def most(self, key: str) -> float:
        return max((n[key] for n in self.nodes), default=0)


def partition(name: str | None) -> Partition | None:
    if not name:
        return None
    info = scontrol("partition", name)
    out = _run(["sinfo", "-h", "-e", "-p", name, "-o", "%c|%m|%G|%D"])
    nodes = []
    if out is not None and out.returncode == 0:
        for line in out.stdout.splitlines():
            cpus, mem, gres, count = (line.split("|") + ["", "", "", ""])[:4]
            nodes.append({"cpus": _int(cpus) or 0, "mem_mb": _mem_mb(mem.rstrip("+")) or 0, "gpus": _gpus(gres),
                          "count": _int(count) or 0})
    return Partition(name, info, nodes)


def _setting(params: dict, key: str) -> str:
    value = params.get(key)
    return f"hydra.launcher.{key}" + (f"={value}" if value is not None else "")


def mismatches(job: dict, part: Partition, params: dict | None = None) -> list[str]:
    """What the job (`scontrol show job` fields) asks for that partition `part` can't give, one phrase each, with
    the launcher setting behind it (`params`: the launcher's settings, for their values)."""
    params = params or {}
    found = []
    cpus = _int(job.get("MinCPUsNode"))
    most_cpus = part.most("cpus")
    cap = _int(part.info.get("MaxCPUsPerNode"))
    limit = min(x for x in (most_cpus or None, cap) if x) if (most_cpus or cap) else None
    if cpus and limit and cpus > limit:
        tasks = int(params.get("tasks_per_node") or 1)
        found.append(f"{cpus} CPUs on one node ({_setting(params, 'cpus_per_task')} × tasks_per_node={tasks}) but "
                     f"the largest node of partition {part.name} has {limit}: set hydra.launcher.cpus_per_task="
                     f"{max(1, limit // tasks)} or less")
    mem = _mem_mb(job.get("MinMemoryNode"))
    if not mem and _mem_mb(job.get("MinMemoryCPU")) and cpus:
        mem = _mem_mb(job.get("MinMemoryCPU")) * cpus
    most_mem = part.most("mem_mb")
    if mem and most_mem and mem > most_mem:
        found.append(f"{mem / 1024:.1f} GB of memory on one node ({_setting(params, 'mem_gb')}) but the largest "
                     f"node of partition {part.name} has {most_mem / 1024:.1f} GB")
    gpus = _gpus(job.get("TresPerNode") or job.get("Gres") or "")
    if gpus and gpus > part.most("gpus"):
        found.append(f"{gpus} GPUs per node ({_setting(params, 'gpus_per_node')}) but the nodes of partition "
                     f"{part.name} have at most {part.most('gpus')}")
    nodes = _int(job.get("NumNodes"))
    total = _int(part.info.get("TotalNodes")) or sum(n["count"] for n in part.nodes)
    max_nodes = _int(part.info.get("MaxNodes"))
    allowed = min(x for x in (total, max_nodes) if x) if (total or max_nodes) else None
    if nodes and allowed and nodes > allowed:
        found.append(f"{nodes} nodes ({_setting(params, 'nodes')}) but partition {part.name} allows {allowed}")
    time_min, max_time = _minutes(job.get("TimeLimit")), _minutes(part.info.get("MaxTime"))
    if time_min and max_time and time_min > max_time:
        found.append(f"a time limit of {time_min:.0f} min ({_setting(params, 'timeout_min')}) but partition "
                     f"{part.name} allows {max_time:.0f} min")
    return found


def explain(job_id: str, reason: str, params: dict | None = None) -> str:
    """One line: why Slurm will never start `job_id`, as the requested resource against what the partition has."""
    job = scontrol("job", job_id)
    part = partition(job.get("Partition"))
    head = reason.split(",")[0].strip()
    if head.startswith(("QOS", "Assoc", "Invalid", "AccountNotAllowed")):
        qos, account = job.get("QOS"), job.get("Account")
        ask = job.get("ReqTRES") or job.get("TRES") or "?"
        return (f"it asks for {ask}, time limit {job.get('TimeLimit', '?')}, beyond a per-job limit of QOS {qos} / "
                f"account {account} (sacctmgr show qos {qos}; sacctmgr show assoc user=$USER list the limits); ask "
                f"for less (hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, timeout_min) or choose another "
                f"hydra.launcher.qos / hydra.launcher.account")
    if head == "ReqNodeNotAvail":
        return (f"it asks for nodes this cluster does not have ({reason}); drop the node list from "
                f"hydra.launcher.additional_parameters or name existing nodes (sinfo -N lists them)")
    found = mismatches(job, part, params) if part is not None else []
    if found:
        return "it asks for " + "; and ".join(found)
    ask = job.get("ReqTRES") or job.get("TRES") or "?"
    offer = part.info.get("TRES", "?") if part is not None else "?"
    return (f"it asks for {ask} (time limit {job.get('TimeLimit', '?')}) and partition {job.get('Partition', '?')} "
            f"offers {offer} (time limit {part.info.get('MaxTime', '?') if part else '?'}); ask for less or choose "
            f"another hydra.launcher.partition")


# -- the wait ---------------------------------------------------------------------------------------------------------

class Unschedulable(Exception):
    """Slurm says a job of the sweep can never start; the message is one line (the launcher exits 2 with it)."""


def status_line(states: dict[str, tuple[str, str]], job_ids: list[str], done: int) -> str:
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for job_id in job_ids:
        state, reason = states.get(job_id, ("", ""))
        if state == "PENDING":
            counts["queued"] = counts.get("queued", 0) + 1
            head = reason.split(",")[0].strip() or "?"
            reasons[head] = reasons.get(head, 0) + 1
        elif state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            counts["running"] = counts.get("running", 0) + 1
        elif state:
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
    parts = []
    if counts.get("queued"):
        why = ", ".join(f"{r}" if n == counts["queued"] else f"{r}: {n}" for r, n in sorted(reasons.items()))
        parts.append(f"{counts.pop('queued')} queued ({why})")
    parts += [f"{n} {state}" for state, n in sorted(counts.items())]
    parts.append(f"{done} done")
    return ", ".join(parts)


def wait_for_jobs(jobs: list[tuple[int, object]], sweep: str, submitted: list[str], params: dict | None = None,
                  out=sys.stderr, clock=time.monotonic, sleep=time.sleep) -> dict[int, object]:
    """Wait for submitit jobs [(position, job)], collecting `job.results()[0]` by position. Prints status lines;
    raises `Unschedulable` (after cancelling `submitted` and the unschedulable jobs) when Slurm says a job can never
    start. `job.results()` raises for a job that failed, as before."""
    pending = dict(jobs)
    results: dict[int, object] = {}
    total = len(pending)
    poll, last_line, last_print = POLL_S, None, -1e9
    while pending:
        states = squeue_states([job.job_id for job in pending.values()])
        for pos, job in list(pending.items()):
            state = states.get(job.job_id, ("", ""))[0] if states is not None else None
            finished_in_slurm = states is not None and state not in NOT_DONE
            if job.done(force_check=finished_in_slurm):
                results[pos] = job.results()[0]
                del pending[pos]
        if not pending:
            break
        if states is not None:
            line = status_line(states, [job.job_id for job in pending.values()], total - len(pending))
            now = clock()
            if (line != last_line and now - last_print >= LINE_EVERY_S) or now - last_print >= HEARTBEAT_S:
                print(f"sfbench: sweep {sweep}: {total} Slurm jobs — {line}", file=out, flush=True)
                last_line, last_print = line, now
            for job in pending.values():
                state, reason = states.get(job.job_id, ("", ""))
                if state == "PENDING" and never_starts(reason):
                    why = explain(job.job_id, reason, params)
                    adopted = [] if job.job_id.split("_")[0] in submitted else [job.job_id]   # an earlier launch's
                    cancelled = cancel(submitted + adopted)
                    raise Unschedulable(f"Slurm can never start job {job.job_id} of sweep {sweep} ({reason}): "
                                        f"{why}. {cancelled}")
        sleep(poll)
        poll = min(poll * 1.5, POLL_MAX_S)
    return results


def cancel(job_ids: list[str]) -> str:
    """scancel the jobs (arrays by their base id); a sentence saying what was cancelled."""
    ids = sorted(set(job_ids))
    if not ids:
        return "Nothing was cancelled."
    out = _run(["scancel", *ids])
    if out is None or out.returncode != 0:
        why = out.stderr.strip() if out is not None else "scancel did not run"
        return f"Cancelling Slurm jobs {', '.join(ids)} failed ({why}): cancel them with scancel."
    return f"Cancelled Slurm job(s) {', '.join(ids)}."
