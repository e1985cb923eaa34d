"""The command line's exit codes, one meaning each across every command:

0 ``EXIT_OK``        done (and, for the checks, nothing found)
1 ``EXIT_FAILED``    something failed (the others were done): a file that could not be read or
                     written, a log that does not verify, a confirmation declined
2 ``EXIT_USAGE``     a usage or configuration error (nothing was done)
3 ``EXIT_UNSIGNED``  ``audit verify``/``report``: intact, but entries after the last signed
                     checkpoint
4 ``EXIT_FOUND``     ``inspect --fail-on``: every file was read and one holds what it names
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSIGNED, EXIT_FOUND = 0, 1, 2, 3, 4
