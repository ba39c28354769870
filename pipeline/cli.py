"""The ``mlmprep`` command.

User mistakes (``UsageError``) print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback. Each command imports what it
needs when it runs: only ``run``, ``demo`` and ``train-tokenizer`` (which
reads inputs through Beam's file systems) load Apache Beam, only ``train``,
``fill-mask`` and ``export`` load TensorFlow, and those only once their
flags have parsed (``--help`` loads neither).
"""

import logging
import os
import sys


class _WorkerStartupNoise(logging.Filter):
    """Drops two warnings every DirectRunner worker process relays as it starts, about nothing wrong."""

    NOISE = ("No semi_persistent_directory found", "Discarding unparseable args")

    def filter(self, record):
        return not any(noise in record.getMessage() for noise in self.NOISE)


def _quiet_beam_imports():
    """Imports the Beam job, without the harmless warning Beam logs about optional GCP clients."""
    logging.getLogger().setLevel(logging.ERROR)
    from mlmprep.pipeline import flags, job  # noqa: F401

    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(_WorkerStartupNoise())


def _run(argv):
    _quiet_beam_imports()
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from mlmprep.pipeline import flags, job, manifest, summary

    if {"-h", "--help"} & set(argv):
        print(flags.help_text(), end="")
        return
    command = flags.parse(argv)
    result = job.run_command(command)
    out = command.settings.output.output
    if PipelineOptions(list(command.beam_argv)).view_as(TestOptions).dry_run:
        print(f"dry run: the job was built, not run ({len(job.step_names(result))} steps)")
    elif result.state == "DONE":
        print(summary.format_manifest(out, manifest.read(out, build_index=True)))
    else:  # a remote runner without waiting (--no_wait_until_finish)
        print(f"job submitted ({result.state}); manifest.json appears in {out} when it finishes")


def _demo(argv):
    _quiet_beam_imports()
    from mlmprep.pipeline import demo
    from mlmprep.pipeline.errors import CliParser

    parser = CliParser(prog="mlmprep demo", description=demo.__doc__)
    parser.add_argument(
        "--output", default="demo_output", help="Where to write the corpus, tokenizer and shards."
    )
    args, beam_args = parser.parse_known_args(argv)
    demo.main(args.output, beam_args)


def _train_tokenizer(argv):
    _quiet_beam_imports()
    from mlmprep.pipeline import train_tokenizer

    train_tokenizer.main(argv)


def _verify(argv):
    from mlmprep.pipeline import verify

    return verify.main(argv)


def _inspect(argv):
    from mlmprep.pipeline import inspect

    inspect.main(argv)


def _report(argv):
    from mlmprep.pipeline import report

    report.main(argv)


def _trainer(module):
    def import_quietly(name):
        """Imports a trainer module, which loads TensorFlow, without TensorFlow's C++ start-up log.

        TF_CPP_MIN_LOG_LEVEL=3 (unless the user set it) quiets what TensorFlow logs once running (a CPU
        machine's failed cuInit among it); the lines its libraries log as they load ("Could not find cuda
        drivers", oneDNN's notice) come before that setting is read (tensorflow/tensorflow#100442), so
        stderr is held back while the module imports, and only those lines are dropped from it.
        """
        import importlib
        import re
        import tempfile

        if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the user's choice: TensorFlow's lines as they come
            return importlib.import_module(name)
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        startup_line = re.compile(  # absl's notice, and a log line in absl's format or TensorFlow's older one
            r"WARNING: All log messages before absl::InitializeLog\(\)"
            r"|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
            r"|\d{4}-\d\d-\d\d [\d:.]+: [IWEF] \S+:\d+\]"
        )
        sys.stderr.flush()
        stderr = os.dup(2)
        with tempfile.TemporaryFile("w+b") as held:
            os.dup2(held.fileno(), 2)
            try:
                return importlib.import_module(name)
            finally:
                sys.stderr.flush()
                os.dup2(stderr, 2)
                os.close(stderr)
                held.seek(0)
                for line in held.read().decode("utf-8", "replace").splitlines(keepends=True):
                    if not startup_line.match(line):
                        sys.stderr.write(line)

    def command(argv):
        from mlmprep.pipeline.errors import UsageError
        from mlmprep.trainer import flags, model_dir

        args = flags.parse(module, argv)  # --help and usage mistakes end here, before TensorFlow
        if module != "train":  # so does a --model folder without a model (train's --data: flags.parse)
            model_dir.check_model_folder(args.model)
        try:
            target = import_quietly(f"mlmprep.trainer.{module}")
        except ImportError as e:
            raise UsageError(
                f"the trainer needs TensorFlow and keras-hub: pip install 'mlmprep[trainer]' ({e})"
            ) from None
        return target.run(args)

    return command


COMMANDS = {
    "run": (_run, "Run the Beam job: raw text -> masked TFRecord/Parquet shards."),
    "demo": (_demo, "Build a corpus and tokenizer from what Python ships, then run the job on it."),
    "train-tokenizer": (
        _train_tokenizer,
        "Train a WordPiece, byte-level BPE or Unigram tokenizer on text files.",
    ),
    "verify": (_verify, "Re-read an output's shards and check them against its manifest.json."),
    "inspect": (_inspect, "Show decoded examples of an output, with the masked positions marked."),
    "report": (_report, "Write one HTML page of an output's counts, lengths, masks and warnings."),
    "train": (_trainer("train"), "Train a BERT masked LM on an output's shards (needs mlmprep[trainer])."),
    "fill-mask": (
        _trainer("fill_mask"),
        "Fill the mask token ([MASK], <mask>) in a sentence with a trained model.",
    ),
    "export": (_trainer("export"), "Write a trained model as a Hugging Face transformers folder."),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:16} {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: mlmprep COMMAND [OPTIONS]  (mlmprep COMMAND --help)\n\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"mlmprep: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    from mlmprep.pipeline.errors import UsageError

    command, _ = COMMANDS[argv[0]]
    try:
        return command(argv[1:]) or 0
    except UsageError as e:
        print(f"mlmprep {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped early (``| head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
