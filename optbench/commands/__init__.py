"""One module per command-line verb: `optbench <verb>` calls optbench.commands.<verb>.main(argv)."""
