"""Run the ragtune CLI from a checkout: ``python cli.py --help`` (installed: the ``ragtune`` command)."""

from ragtune.cli import main

if __name__ == "__main__":
    main()
