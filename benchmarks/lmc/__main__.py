"""`python -m benchmarks.lmc ...` (from the repository root)."""

from .run import main

if __name__ == "__main__":
    main()
