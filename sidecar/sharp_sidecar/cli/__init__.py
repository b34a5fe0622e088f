"""The `sharp` command line: argument parsing (main, common), and the predict, batch, render and bench commands."""
