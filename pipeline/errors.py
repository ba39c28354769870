"""The error every command reports as a user mistake, and the parser that raises it.

The command line turns ``UsageError`` into one line on stderr and exit status 2.
Kept apart so that every command (the trainer's too) can use them without
importing the job.
"""

import argparse


class UsageError(Exception):
    """A mistake in how mlmprep was called; the message says which."""


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)
