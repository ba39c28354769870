"""The flags of ``mlmprep train``, ``fill-mask`` and ``export``, without TensorFlow.

Parsing comes before anything heavy is imported: ``--help`` and a usage
mistake print their lines and no TensorFlow start-up log, and cost a
fraction of a second.
"""

import argparse
import dataclasses
import json
import os

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import recipes, settings_text
from mlmprep.pipeline import settings as settings_lib
from mlmprep.pipeline.errors import CliParser, UsageError
from mlmprep.trainer import masking as masking_lib
from mlmprep.trainer import model_dir as model_dir_lib

MODEL_SIZES = ("tiny", "small", "base", "large")  # trainer/model.py's SIZES
WARMUP_FRACTION = 0.1
EXPORT_FORMATS = ("transformers",)
OBJECTIVES = ("mlm", "electra")
# The defaults of the settings a recipe may set: each flag's default is None, so that what was given is
# what is not None, and the recipe lies between these and the flags.
TRAIN_DEFAULTS = {
    "objective": "mlm",
    "learning_rate": None,
    "warmup_fraction": WARMUP_FRACTION,
    "weight_decay": 0.01,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-6,
    "generator_fraction": 0.25,
    "dynamic_masking": False,
}
DEFAULT_MODEL = "tiny"
# In a model folder that --init_from started: where from (a rerun with the same --init_from resumes the run).
INIT_RECORD = "init_from.json"


def train_parser() -> CliParser:
    parser = CliParser(
        prog="mlmprep train",
        description="Trains a BERT masked LM on an mlmprep output (and, on sentence pairs, its pair head).",
    )
    parser.add_argument(
        "--data", required=True, help="An mlmprep output directory (TFRecord shards + manifest.json)."
    )
    parser.add_argument(
        "--output", required=True, help="Model directory: model, checkpoints, logs, history.json."
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help=f"A published recipe's training settings ({', '.join(recipes.RECIPES)}): objective, masking, "
        "learning rate and schedule, optimizer; every flag given wins. The data must be the recipe's "
        "(mlmprep run --recipe): its sequence length and sentence pairs are checked, not set.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"{'|'.join(MODEL_SIZES)} or a JSON BertBackbone config (default {DEFAULT_MODEL}; with "
        "--init_from, that model's).",
    )
    parser.add_argument(
        "--init_from",
        default=None,
        metavar="MODEL_DIR",
        help="Start from the model a finished mlmprep train wrote in MODEL_DIR (a previous phase's "
        "--output): its encoder's and heads' weights, not its optimizer state or step; the learning-rate "
        "schedule starts at step 0. Its tokenizer must be the data's; a longer --data sequence grows "
        "its position embeddings. A rerun of the same command resumes from --output's checkpoints.",
    )
    parser.add_argument("--steps", type=int, default=1000, help="Training steps in all (a rerun resumes).")
    parser.add_argument("--batch_size", type=int, default=64, help="Global batch, divided across GPUs.")
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=None,
        help="Peak learning rate (default: by model size, 1e-3 tiny, 5e-4 small, 1e-4 base and large).",
    )
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=None,
        # argparse formats help with %: a percent sign is written %%.
        help="Linear warmup, then linear decay to 0 (default: --warmup_fraction of --steps).",
    )
    parser.add_argument(
        "--warmup_fraction",
        type=float,
        default=None,
        help="Without --warmup_steps, the share of --steps that warms up (a recipe's schedule shape; "
        "default 0.1).",
    )
    parser.add_argument("--weight_decay", type=float, help="AdamW decoupled weight decay (default 0.01).")
    parser.add_argument("--adam_beta2", type=float, help="AdamW's beta_2 (default 0.999; RoBERTa's: 0.98).")
    parser.add_argument("--adam_epsilon", type=float, help="AdamW's epsilon (default BERT's 1e-6).")
    parser.add_argument(
        "--checkpoint_every", type=int, default=500, help="Evaluate and checkpoint every N steps."
    )
    parser.add_argument(
        "--eval_batches", type=int, default=None, help="Validation batches per evaluation (all)."
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="(default: mlm) mlm: BERT's masked LM (and, on sentence pairs, its pair head); electra: "
        "ELECTRA's "
        "replaced-token detection, a generator masked LM filling the masked positions and the model (the "
        "discriminator) telling replaced tokens from originals at every position.",
    )
    parser.add_argument(
        "--generator_fraction",
        type=float,
        help="ELECTRA: the generator's width (hidden size, heads, feed-forward) as a fraction of the "
        "discriminator's, in (0, 1] (default 0.25; the paper's 1/4 to 1/2).",
    )
    parser.add_argument(
        "--dynamic_masking",
        action="store_true",
        default=None,
        help="Re-mask every batch of masked shards, by tokens (RoBERTa style). Unmasked shards (mlmprep run "
        "--masking none) are always masked a batch at a time, by the flags below.",
    )
    parser.add_argument(
        "--nodynamic_masking",
        dest="dynamic_masking",
        action="store_false",
        default=None,
        help="Train on the masks the shards hold (where a --recipe sets --dynamic_masking).",
    )
    masking = parser.add_argument_group(
        "masking in training",
        "For unmasked shards (--masking none) or with --dynamic_masking; each defaults to the data's run "
        "(the job's own masking settings: docs/reference.md).",
    )
    settings_text.add_arguments(masking, masking_lib.FIELDS, defaults=False, masking=masking_lib.MASKINGS)
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the initial weights, shuffling and dynamic masking."
    )
    parser.add_argument(
        "--early_stopping_patience",
        type=int,
        default=None,
        help="Stop once the validation loss has not improved for N evaluations; the best checkpoint is "
        "then the final model, and history.json's last entry says where and why it stopped.",
    )
    return parser


def fill_mask_parser() -> CliParser:
    parser = CliParser(
        prog="mlmprep fill-mask",
        description="The top-k tokens a trained model puts at each mask token ([MASK], <mask>).",
    )
    parser.add_argument("--model", required=True, help="A model directory written by mlmprep train.")
    parser.add_argument(
        "text",
        help='Text with one or more of the tokenizer\'s mask token, e.g. "the quick brown [MASK] jumps" '
        '(RoBERTa\'s: "the quick brown <mask> jumps").',
    )
    parser.add_argument("--top_k", type=int, default=5, help="How many tokens to show per mask token.")
    return parser


def export_parser() -> CliParser:
    parser = CliParser(
        prog="mlmprep export",
        description="Writes a trained model as a Hugging Face transformers folder (BertForMaskedLM, or "
        "BertForPreTraining with a pair head; an ELECTRA model as two, discriminator/ with "
        "ElectraForPreTraining and generator/ with ElectraForMaskedLM): config, safetensors weights, "
        "tokenizer.",
    )
    parser.add_argument("--model", required=True, help="A model directory written by mlmprep train.")
    parser.add_argument("--output", required=True, help="The folder to write (created if absent).")
    parser.add_argument("--format", default="transformers", choices=EXPORT_FORMATS)
    return parser


PARSERS = {"train": train_parser, "fill_mask": fill_mask_parser, "export": export_parser}


def parse(module: str, argv: list[str]):
    """The flags of a trainer command; ``train``'s ``--recipe`` lies under the flags given (one line says
    what it set), and its data is checked before TensorFlow loads."""
    if module != "train":
        return PARSERS[module]().parse_args(argv)
    args, applied = parse_train(argv)
    if applied is not None:
        print(applied.line())
    manifest = _check_data(args.data, applied.recipe if applied else None)
    # The masking flags against the data (words need unmasked shards, ...), before TensorFlow loads too.
    masking_lib.resolve(manifest, {n: getattr(args, n) for n in masking_lib.FIELDS}, args.dynamic_masking)
    if args.init_from is not None:  # the model folder against the data and --output, before TensorFlow too
        check_init_from(args.init_from, args.output, args.data, manifest, args.objective)
    return args


def parse_train(argv: list[str]) -> tuple[argparse.Namespace, recipes.Applied | None]:
    """``mlmprep train``'s flags over its ``--recipe``'s settings over the defaults, their values checked;
    and what the recipe set."""
    args = train_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k in TRAIN_DEFAULTS}
    if args.init_from is not None:
        for name in ("model", "generator_fraction"):
            if getattr(args, name) is not None:
                raise UsageError(
                    f"--{name} with --init_from: the model (its shapes, and an ELECTRA model's generator) is "
                    f"the one in {args.init_from}; drop --{name}"
                )
    args.model = args.model or DEFAULT_MODEL
    values, applied = recipes.lay_under(args.recipe, given, "train")
    for name, default in TRAIN_DEFAULTS.items():
        setattr(args, name, values.get(name, default))
    for name in masking_lib.FIELDS:  # typed and checked on their own now; against the data in ``parse``
        if getattr(args, name) is not None:
            setattr(args, name, settings_lib.coerce(name, getattr(args, name)))
            settings_lib.check_value(name, getattr(args, name))
    if args.masking is not None and args.masking not in masking_lib.MASKINGS:
        raise UsageError(f"--masking must be one of {', '.join(masking_lib.MASKINGS)}, got {args.masking}")
    _check_train(args)
    return args, applied


def _check_data(data_dir: str, recipe: recipes.Recipe | None) -> dict:
    """The data's manifest; data that is not an output, or not the recipe's, is one line before TensorFlow
    loads."""
    from mlmprep.pipeline import manifest as manifest_lib

    try:
        manifest = manifest_lib.read(data_dir)
    except manifest_lib.ManifestError as e:
        raise UsageError(f"--data: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read --data {data_dir}: {e}") from None
    if recipe is not None:
        recipes.check_data(recipe, manifest_lib.settings(manifest), manifest.get("recipe"), data_dir)
    return manifest


def _check_train(args) -> None:
    """The values of train's flags on their own, before TensorFlow loads."""
    problems = [
        (
            args.early_stopping_patience is not None and args.early_stopping_patience < 1,
            f"--early_stopping_patience must be at least 1, got {args.early_stopping_patience}",
        ),
        (
            not 0 <= args.warmup_fraction < 1,
            f"--warmup_fraction must be in [0, 1), got {args.warmup_fraction}",
        ),
        (not 0 <= args.adam_beta2 < 1, f"--adam_beta2 must be in [0, 1), got {args.adam_beta2}"),
        (args.adam_epsilon <= 0, f"--adam_epsilon must be positive, got {args.adam_epsilon}"),
        (
            not 0 < args.generator_fraction <= 1,
            f"--generator_fraction must be in (0, 1], got {args.generator_fraction}: the generator is the "
            "smaller model",
        ),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(message)


@dataclasses.dataclass
class InitFrom:
    """The model folder ``--init_from`` names, checked: what the new run starts from."""

    model_dir: str  # as given
    backbone: dict  # its config.json: the encoder's arguments (and an ELECTRA model's objective, generator)
    manifest: dict  # its manifest.json: the data it was trained on last
    step: int | None  # the step of its model.keras (the best one where it stopped early), from history.json
    resume: bool  # --output holds checkpoints of a run that started from this folder: resume that run
    # A line for the run to print: the data's tokenizer is another file of the model's vocabulary.
    note: str | None = None


def check_init_from(init_from: str, output: str, data_dir: str, manifest: dict, objective: str) -> InitFrom:
    """``--init_from``'s folder, checked before TensorFlow loads: a model folder that a finished ``mlmprep
    train`` wrote, its objective, tokenizer and sentence pairs the new run's, and ``--output`` a new folder
    or a run that started from it (which a rerun resumes). The sequence length may grow (the trainer
    grows the position embeddings), and packing may change (a packed model has the same weights)."""
    where = f"--init_from {init_from}"
    if not os.path.isdir(init_from):
        raise UsageError(f"{where}: no such folder")
    if os.path.realpath(init_from) == os.path.realpath(output):
        raise UsageError(
            f"{where} is --output: a new phase writes a new folder (rerun that run without --init_from to "
            "resume it or to train it further)"
        )
    not_written = f"{where} is not a model folder written by mlmprep train"
    if not os.path.exists(os.path.join(init_from, manifest_lib.MANIFEST)):
        raise UsageError(f"{not_written} (no {manifest_lib.MANIFEST})")
    try:
        init_manifest = manifest_lib.read(init_from)
    except (manifest_lib.ManifestError, OSError) as e:
        raise UsageError(f"--init_from: {e}") from None
    try:
        with open(os.path.join(init_from, model_dir_lib.MODEL_CONFIG), encoding="utf-8") as f:
            backbone = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{not_written} (no {model_dir_lib.MODEL_CONFIG})") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: {model_dir_lib.MODEL_CONFIG} does not read: {e}") from None
    if not isinstance(backbone, dict) or not {"vocabulary_size", "max_sequence_length"} <= set(backbone):
        raise UsageError(f"{not_written} ({model_dir_lib.MODEL_CONFIG} is not a model's config)")
    if not os.path.exists(os.path.join(init_from, model_dir_lib.FINAL_MODEL)):
        found = model_dir_lib.checkpoints(init_from)
        raise UsageError(
            f"{where}: its run has not finished (checkpoints to step {found[-1][0]}, no "
            f"{model_dir_lib.FINAL_MODEL}): rerun its mlmprep train to finish it first"
            if found
            else f"{where} holds no trained model (no {model_dir_lib.FINAL_MODEL})"
        )
    trained = backbone.get("objective", "mlm")
    if trained != objective:
        raise UsageError(
            f"{where}: its model was trained with --objective {trained}, this run's is {objective}"
        )
    note = _check_same_vocabulary(init_from, init_manifest, data_dir, manifest)
    before, now = (manifest_lib.settings(m).pairs.mode for m in (init_manifest, manifest))
    # A BERT model has a pair head, or not, by its data (nsp and sop share one); ELECTRA's has none.
    if objective != "electra" and (before == "none") != (now == "none"):
        raise UsageError(
            f"{where}: its model was trained on --sentence_pairs {before} data, --data {data_dir} is "
            f"--sentence_pairs {now} (a pair head is kept or left out by the data)"
        )
    return InitFrom(
        model_dir=init_from,
        backbone=backbone,
        manifest=init_manifest,
        step=_final_step(init_from),
        resume=_resumes(init_from, output),
        note=note,
    )


def _final_step(model_dir: str) -> int | None:
    """The step of a finished run's model.keras: its last, or the best where it stopped early."""
    try:
        with open(os.path.join(model_dir, model_dir_lib.HISTORY), encoding="utf-8") as f:
            last = json.load(f)[-1]
        return int(last["stopped_early"]["best_step"] if "stopped_early" in last else last["step"])
    except (OSError, ValueError, LookupError, TypeError):
        return None


def _resumes(init_from: str, output: str) -> bool:
    """Whether ``--output`` holds a run that started from ``init_from`` (resume it); a folder without
    checkpoints starts anew, and one with another run's checkpoints is one line."""
    if not model_dir_lib.checkpoints(output):
        return False
    try:
        with open(os.path.join(output, INIT_RECORD), encoding="utf-8") as f:
            started = json.load(f)["init_from"]
    except (OSError, ValueError, LookupError, TypeError):
        started = None
    if started == os.path.realpath(init_from):
        return True
    began = f"started from {started}" if started else "started from fresh weights"
    raise UsageError(
        f"--output {output} holds checkpoints of a run that {began}, not from --init_from {init_from}: "
        "give the new phase a new --output (or drop --init_from to resume that run)"
    )


def _tokenizer_named(model_or_data: str, manifest: dict) -> str:
    tokenizer = manifest["tokenizer"]
    given = manifest.get("settings", manifest.get("config", {})).get("tokenizer")
    return (
        f"{os.path.join(model_or_data, tokenizer['file'])}"
        + (f" (from {given})" if given else "")
        + f", {tokenizer['vocab_size']:,} tokens, sha256 {tokenizer['sha256'][:12]}"
    )


def _vocabulary(folder: str, manifest: dict) -> dict | None:
    """Token -> id of the tokenizer an output or a model folder holds; None where it does not load."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(os.path.join(folder, manifest["tokenizer"]["file"])).get_vocab()
    except Exception:  # tokenizers raises its own Exception for a file it cannot read
        return None


def _check_same_vocabulary(init_from: str, init_manifest: dict, data_dir: str, manifest: dict) -> str | None:
    """The model's vocabulary is the data's: the same tokenizer, or one with the same tokens, ids and
    special tokens (its text handling may differ: the ids mean what they meant; a line says so)."""
    before, now = init_manifest["tokenizer"], manifest["tokenizer"]
    if before["sha256"] == now["sha256"]:
        return None
    same = before["vocab_size"] == now["vocab_size"] and before.get("special_ids") == now.get("special_ids")
    if same:  # the same size and specials: the same tokens at the same ids?
        tokens = _vocabulary(init_from, init_manifest)
        same = tokens is not None and tokens == _vocabulary(data_dir, manifest)
    if not same:
        model, data = _tokenizer_named(init_from, init_manifest), _tokenizer_named(data_dir, manifest)
        raise UsageError(
            f"--init_from {init_from}'s vocabulary is not --data's: the model's tokenizer is {model}, the "
            f"data's {data} (a phase's data must be tokenized with the model's tokenizer)"
        )
    return (
        f"--init_from: the data's tokenizer is not the model's file ({_tokenizer_named(data_dir, manifest)}) "
        "but has its vocabulary: the same tokens, ids and special tokens"
    )
