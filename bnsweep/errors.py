"""The base of every error meant for a person rather than a traceback.

The CLI prints such an error's message on one line and exits with `exit_code`:
2 for a bad command line, value or file (usage), 1 for the environment (missing
data, unreachable tracking server, empty experiment).
"""


class BnsweepError(Exception):
    exit_code = 1


class UsageError(BnsweepError):
    exit_code = 2
