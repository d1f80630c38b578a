"""``python -m distbreaker``: the same as the ``distbreaker`` command."""

from distbreaker.cli import main

if __name__ == "__main__":
    main()
