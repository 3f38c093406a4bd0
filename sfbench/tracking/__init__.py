"""sfbench.tracking — the local run record (always on) and loading runs for analysis (DESIGN.md "Run directory").

No dependency on tasks or optimizers: it writes and reads plain files. `lock.py`: one writer per run directory.
"""

from .run_record import (STATUSES, RecordDamaged, RecordWriteError, RunRecord, find_runs, flatten, iter_metrics,
                         load_runs, read_config, read_summary)

__all__ = ["RunRecord", "load_runs", "find_runs", "flatten", "iter_metrics", "read_config", "read_summary",
           "STATUSES", "RecordDamaged", "RecordWriteError"]
