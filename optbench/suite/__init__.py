"""`optbench suite`: score optimizers across many workloads (issue 14).

One concern per module: workloads (which tasks, from conf/suite/<group>.yaml), run (the same tuning
budget for every optimizer on every workload, through tune, then seeds), collect (read the runs back,
counting every failed or diverged one), score (per-workload numbers), profile (the AlgoPerf-style
performance profile and its area), tables (md/csv/tex) and plots (heat map, profile).
"""
