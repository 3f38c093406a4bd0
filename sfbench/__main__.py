"""`python -m sfbench [overrides]` — see sfbench/cli/ and README.md."""

from .cli import main

if __name__ == "__main__":
    main()
