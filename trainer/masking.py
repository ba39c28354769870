"""What the trainer masks batches with: the data's own masking rules, or the flags' changes to them.

An output written with ``--masking none`` holds no masks: the trainer masks
every batch, by tokens, words or spans (it keeps the word starts), at any rate
and ratios. A masked output is used as written, or re-masked by tokens with
``--dynamic_masking`` (its word boundaries are not stored). Needs no
TensorFlow: the checks run before it is loaded.
"""

import dataclasses

from mlmprep.pipeline import manifest as manifest_lib
from mlmprep.pipeline import settings as settings_lib
from mlmprep.pipeline.errors import UsageError
from mlmprep.transforms.mask import MaskingConfig, default_predictions

# The flags of ``mlmprep train`` that change the masking: the job's own masking settings.
FIELDS = settings_lib.TRAIN_MASKING
MASKINGS = ("token", "word", "span")  # what the trainer masks by


class MaskingError(UsageError):
    """The flags ask for masking the data cannot give."""


def resolve(manifest: manifest_lib.Manifest, given: dict, dynamic: bool) -> MaskingConfig | None:
    """The masking of every training batch; None: the batches as the shards hold them.

    ``given``: the flags' values by ``FIELDS`` name (None: not given).
    ``dynamic``: ``--dynamic_masking``.
    """
    given = {k: settings_lib.coerce(k, v) for k, v in given.items() if v is not None}
    data = manifest_lib.settings(manifest)
    unmasked, seq = data.masking.unmasked, data.packing.max_seq_length
    if not unmasked and not dynamic:
        if given:
            raise MaskingError(
                f"--{next(iter(given))}: the shards are masked already; add --dynamic_masking to re-mask "
                "every batch, or write the data with --masking none"
            )
        return None
    # An unmasked output's run still says the rate and ratios it was made for (a recipe's, or the defaults).
    base = dataclasses.replace(data.masking, mode="token") if unmasked else data.masking
    fields = {settings_lib.SETTINGS[name][1].name: value for name, value in given.items()}
    masking = dataclasses.replace(base, **fields)
    # The run's cap (its default for its rate, or the one given) holds unless training asks another rate.
    if "max_predictions_per_seq" not in given and masking.masked_lm_prob != base.masked_lm_prob:
        cap = default_predictions(seq, masking.masked_lm_prob)
        masking = dataclasses.replace(masking, max_predictions_per_seq=cap)
    settings_lib.check_masking(masking, seq, MASKINGS)
    if masking.by_words and not unmasked:
        raise MaskingError(
            f"--masking {masking.mode} needs word starts, which masked shards do not keep: write the "
            "data with --masking none to mask words or spans in training"
        )
    if masking.by_words and manifest["tokenizer"].get("word_starts", "words") is None:
        raise MaskingError(
            f"--masking {masking.mode}: the data's tokenizer marks no words (its word_starts mark every "
            "token); mask by tokens"
        )
    return masking.config()
