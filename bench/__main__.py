"""Run every benchmark: `python -m bench [--clocks N] [--span-seconds S] [--ticks 1,0.5]`."""

from __future__ import annotations

import sys

from bench import clocks


def main(argv: list[str]) -> int:
    return clocks.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
