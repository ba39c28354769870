"""What the trainer masks batches with: the data's own masking rules, or the flags' changes to them.

An output written with ``--masking none`` holds no masks: the trainer masks
every batch, by tokens, words or spans (it keeps the word starts), at any rate
and ratios. A masked output is used as written, or re-masked by tokens with
``--dynamic_masking`` (its word boundaries are not stored). Needs no
TensorFlow: the checks run before it is loaded.
"""

import dataclasses

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.transforms.mask import SPAN_LENGTHS, MaskingConfig, default_predictions

# The flags of ``mlmprep train`` that change the masking, as MaskingConfig's fields.
FIELDS = (
    "masking",
    "masked_lm_prob",
    "mask_token_ratio",
    "random_token_ratio",
    "max_predictions_per_seq",
    "span_p",
    "max_span_words",
    "span_lengths",
)
MASKINGS = ("token", "word", "span")  # what the trainer masks by


class MaskingError(ValueError):
    """The flags ask for masking the data cannot give."""


def resolve(manifest: manifest_lib.Manifest, given: dict, dynamic: bool) -> MaskingConfig | None:
    """The masking of every training batch; None: the batches as the shards hold them.

    ``given``: the flags' values by ``FIELDS`` name (None: not given).
    ``dynamic``: ``--dynamic_masking``.
    """
    given = {k: v for k, v in given.items() if v is not None}
    unmasked = manifest["config"].get("masking") == "none"
    if not unmasked and not dynamic:
        if given:
            raise MaskingError(
                f"--{next(iter(given))}: the shards are masked already; add --dynamic_masking to re-mask "
                "every batch, or write the data with --masking none"
            )
        return None
    data = manifest_lib.masking_config(manifest)
    # An unmasked output's run still says the rate and ratios it was made for (a recipe's, or the defaults).
    config = dataclasses.replace(data, **{"masking": "token" if unmasked else data.masking, **given})
    seq = manifest["config"]["max_seq_length"]
    # The run's cap (its default for its rate, or the one given) holds unless training asks another rate.
    if (
        "max_predictions_per_seq" not in given
        and given.get("masked_lm_prob", data.masked_lm_prob) != data.masked_lm_prob
    ):
        config = dataclasses.replace(
            config, max_predictions_per_seq=default_predictions(seq, config.masked_lm_prob)
        )
    _check(config, seq)
    if config.by_words and not unmasked:
        raise MaskingError(
            f"--masking {config.masking} needs word starts, which masked shards do not keep: write the "
            "data with --masking none to mask words or spans in training"
        )
    if config.by_words and manifest["tokenizer"].get("word_starts", "words") is None:
        raise MaskingError(
            f"--masking {config.masking}: the data's tokenizer marks no words (its word_starts mark every "
            "token); mask by tokens"
        )
    return config


def _check(config: MaskingConfig, seq: int) -> None:
    problems = [
        (config.masking not in MASKINGS, f"--masking must be one of {', '.join(MASKINGS)}"),
        (
            not 0 < config.masked_lm_prob <= 1,
            f"--masked_lm_prob must be in (0, 1], got {config.masked_lm_prob}",
        ),
        (
            not 1 <= config.max_predictions_per_seq <= seq - 2,
            f"--max_predictions_per_seq must be in [1, {seq - 2}], got {config.max_predictions_per_seq}",
        ),
        (
            not (0 <= config.mask_token_ratio and 0 <= config.random_token_ratio)
            or config.mask_token_ratio + config.random_token_ratio > 1,
            "--mask_token_ratio and --random_token_ratio must be at least 0 and add up to at most 1, got "
            f"{config.mask_token_ratio} and {config.random_token_ratio}",
        ),
        (not 0 < config.span_p <= 1, f"--span_p must be in (0, 1], got {config.span_p}"),
        (config.max_span_words < 1, f"--max_span_words must be at least 1, got {config.max_span_words}"),
        (config.span_lengths not in SPAN_LENGTHS, f"--span_lengths must be one of {', '.join(SPAN_LENGTHS)}"),
    ]
    for bad, message in problems:
        if bad:
            raise MaskingError(message)
