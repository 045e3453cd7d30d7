"""Comparison reports: run directories -> statistics -> tables (md/csv/tex) -> plots.

collect.py finds and reads run directories, stats.py groups runs into rows and computes the
statistics, tables.py renders them, plots.py draws the figures, build.py writes a report folder;
the command line, `optbench report`, is optbench/commands/report.py.
"""
