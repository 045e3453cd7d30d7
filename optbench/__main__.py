"""`python -m optbench <verb> ...`: the same command line as `optbench <verb> ...`."""

from optbench.cli import main

if __name__ == "__main__":
    main()
