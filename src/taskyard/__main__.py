"""``python -m taskyard``: the ``taskyard`` command line."""

from taskyard.cli.main import main

if __name__ == "__main__":
    main()
