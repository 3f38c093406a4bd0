"""sfbench — a benchmark suite for schedule-free optimization research."""

__version__ = "0.1.0"


def cache_root():
    """sfbench's cache directory: `$SFBENCH_CACHE`, else `~/.cache/sfbench` (read from the environment at each call;
    an empty value counts as unset). The config's `paths.cache_dir` follows the same rule through Hydra's resolver;
    this is the one place for code that has no config at hand (stand-ins, PEP results)."""
    import os
    from pathlib import Path

    return Path(os.path.expanduser(os.environ.get("SFBENCH_CACHE") or "~/.cache/sfbench"))
