"""Flex Template entry point: runs ``mlmprep run`` with the template's parameters."""

import logging
import sys

from mlmprep.pipeline import cli

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    sys.exit(cli.main(["run", *sys.argv[1:]]))
