"""The command line's exit codes: 0 done, 1 something failed (the others were done), 2 a
usage or configuration error (nothing was done)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
