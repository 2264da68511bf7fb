"""``python -m taskyard``: the same command line as ``taskyard``."""

from taskyard.cli import main

__all__ = ("main",)

if __name__ == "__main__":
    main()
