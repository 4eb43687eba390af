"""The `ferrocorn` command and `python -m ferrocorn`."""

import sys

from ferrocorn._ferrocorn import run


def main() -> None:
    # Both the master and, after fork, each worker return here with their exit status.
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    main()
