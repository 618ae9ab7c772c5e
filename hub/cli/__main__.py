"""`python -m hub.cli`: the `stophub` command."""

from hub.cli import main

if __name__ == "__main__":
    main()
