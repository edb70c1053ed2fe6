"""``python -m wassnet ...``: the ``wassnet`` command (see :mod:`wassnet.cli`)."""

from wassnet.cli import main

if __name__ == "__main__":  # pragma: no cover - the command's own entry point
    main(prog_name="wassnet")
