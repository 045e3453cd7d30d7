"""`optbench landscape`'s library: 2-D test functions (functions.py), optimizer trajectories on
them (run.py) and their pictures (plot.py)."""
