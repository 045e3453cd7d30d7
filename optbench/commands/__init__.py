"""One thin module per `optbench` verb: each parses its arguments and calls the library module that owns the work."""
