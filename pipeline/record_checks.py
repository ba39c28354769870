"""The invariants of every record of an output, checked a slice of rows at a time (numpy over the slice).

The frame ([CLS] ... [SEP] [PAD], or the tokenizer's own; with pairs, the
pair frame and segment ids), best-fit pieces, the masking rules (specials
never selected, positions inside the sequence and ascending, the
prediction-count rule, every selected token replaced by the mask token, a
random ordinary token, or kept) and an unmasked output's word starts.
``verify`` streams the shards through ``check_batch``.
"""

import dataclasses

import numpy as np

from mlmprep.transforms import encode, records
from mlmprep.transforms.mask import MaskingConfig, prediction_counts
from mlmprep.transforms.records import MaskedBatch


def _check_frame(batch: MaskedBatch, extra: dict, vocab, fail, several_pieces: bool = False):
    """The tokenizer's frame around the body (pairs: its pair frame; best-fit packing: around each
    piece), position ids, padding, the masks and segments, and ids inside the vocabulary."""
    n, seq = batch.input_ids.shape
    cols, lengths = np.arange(seq)[None, :], batch.lengths[:, None]
    fail(np.any(extra["input_mask"] != (cols < lengths), axis=1), "input_mask is not ones then zeros")
    frame = vocab.frame
    if batch.next_sentence_labels is None:
        fail(np.any(extra["segment_ids"] != 0, axis=1), "segment_ids not all 0")
        if "next_sentence_labels" in extra:  # TFRecord's, always 0 without pairs
            fail(np.any(extra["next_sentence_labels"] != 0, axis=1), "next_sentence_labels not 0")
        prefix, suffix = frame.prefix, frame.suffix
    else:
        _check_pair(batch, extra, vocab, fail)
        prefix, suffix = frame.pair_prefix, frame.pair_suffix
    fail(
        np.any(batch.input_ids[:, : prefix.size] != prefix, axis=1),
        f"does not start with {_text(vocab, prefix)}",
    )
    ends = batch.lengths[:, None] - suffix.size + np.arange(suffix.size)[None, :]
    last = np.take_along_axis(batch.input_ids, np.clip(ends, 0, seq - 1), axis=1)
    fail(np.any(last != suffix, axis=1), f"does not end with {_text(vocab, suffix)}")
    fail(
        np.any((cols >= lengths) & (batch.input_ids != vocab.pad_id), axis=1), "padding is not the pad token"
    )
    if prefix.size and not several_pieces:
        fail(np.sum(batch.input_ids == prefix[0], axis=1) != 1, f"{_text(vocab, prefix[:1])} more than once")
    if several_pieces:
        _check_pieces(batch, vocab, fail)
    if "position_ids" in extra:  # outputs from before position_ids have none
        expected = records.position_ids(batch.input_ids, batch.lengths, frame.first_id)
        fail(
            np.any(extra["position_ids"] != expected, axis=1),
            "position_ids do not restart at 0 at each piece's first token and count up by one inside it "
            "(0 on padding)",
        )
    if encode.PIECE_LENGTHS in extra:  # outputs from before piece_lengths have none
        _check_piece_lengths(batch, extra[encode.PIECE_LENGTHS], frame.first_id, fail)
    fail(np.any((batch.input_ids < 0) | (batch.input_ids >= vocab.size), axis=1), "id outside the vocabulary")


def _check_piece_lengths(batch: MaskedBatch, per_piece, first_id, fail):
    """Each row's piece_lengths (what varlen kernels take as cu_seqlens) tile its real tokens, one a piece
    as the tokens tell them (each restarts the position ids)."""
    values, counts = per_piece
    sums = np.add.reduceat(values, np.cumsum(counts) - counts) if len(counts) else np.zeros(0, np.int64)
    wrong = sums != batch.lengths
    fail(wrong, "piece_lengths do not add up to the row's tokens")
    ok, lengths = ~wrong, batch.lengths[~wrong]
    told = records.position_ids(batch.input_ids[ok], lengths, first_id)
    given = records.piece_position_ids(values[np.repeat(ok, counts)], lengths, batch.input_ids.shape[1])
    differ = np.zeros(len(ok), dtype=bool)
    differ[ok] = np.any(told != given, axis=1)
    fail(differ, "piece_lengths are not the pieces the tokens tell")


def _check_pieces(batch: MaskedBatch, vocab, fail):
    """Best-fit packing: every piece framed on its own, each with a token at least, none crossing a
    sequence (a piece is the run of real tokens from one start to the next)."""
    frame = vocab.frame
    n, seq = batch.input_ids.shape
    starts = records.piece_starts(batch.input_ids, batch.lengths, frame.first_id)
    rows, cols = np.nonzero(starts)
    ends = np.append(cols[1:], 0)
    last_of_row = np.append(rows[1:] != rows[:-1], True)
    ends[last_of_row] = batch.lengths[rows[last_of_row]]
    bad = np.zeros(n, dtype=bool)
    bad[rows[ends - cols < frame.specials + 1]] = True
    for k, token in enumerate(frame.prefix):
        bad[rows[batch.input_ids[rows, np.minimum(cols + k, seq - 1)] != token]] = True
    for k, token in enumerate(frame.suffix):
        at = np.clip(ends - frame.suffix.size + k, 0, seq - 1)
        bad[rows[batch.input_ids[rows, at] != token]] = True
    fail(bad, f"a piece is not framed on its own as {vocab.frames['single']}")


def _text(vocab, ids) -> str:
    return " ".join(vocab.name(int(i)) for i in ids) or "nothing"


def _check_pair(batch: MaskedBatch, extra: dict, vocab, fail):
    """Two segments framed as the tokenizer frames pairs; segment ids 0 up to B, B's type id from B on."""
    n, seq = batch.input_ids.shape
    frame = vocab.frame
    cols, lengths = np.arange(seq)[None, :], batch.lengths[:, None]
    separators = np.concatenate([frame.middle, frame.pair_suffix])
    seps = np.isin(batch.input_ids, separators) & (cols < lengths)
    fail(seps.sum(axis=1) != separators.size, f"a pair without exactly {separators.size} separators")
    starts = frame.segment_starts(batch.input_ids)
    middle = starts[:, None] - frame.middle.size + np.arange(frame.middle.size)[None, :]
    found = np.take_along_axis(batch.input_ids, np.clip(middle, 0, seq - 1), axis=1)
    fail(np.any(found != frame.middle, axis=1), "segments not separated as the pair frame says")
    segment_ids = extra["segment_ids"]
    expected = ((cols >= starts[:, None]) & (cols < lengths)) * frame.b_type
    fail(np.any(segment_ids != expected, axis=1), f"segment_ids are not 0, then {frame.b_type} from B on")
    a_first = frame.pair_prefix.size
    fail(
        (starts - frame.middle.size <= a_first) | (starts >= batch.lengths - frame.pair_suffix.size),
        "an empty segment",
    )
    labels = batch.next_sentence_labels
    fail((labels != 0) & (labels != 1), "next_sentence_labels not 0 or 1")


def _check_predictions(batch: MaskedBatch, extra: dict, vocab, fail) -> np.ndarray:
    """The masked_lm_* layout: weights, 0 padding, positions inside and ascending, no special token
    selected, labels that agree. Returns which prediction slots are in use."""
    seq = batch.input_ids.shape[1]
    slot = np.arange(batch.masked_lm_positions.shape[1])[None, :]
    valid = slot < batch.num_predictions[:, None]
    positions = batch.masked_lm_positions
    fail(np.any(extra["masked_lm_weights"] != valid, axis=1), "masked_lm_weights is not ones then zeros")
    padding = ~valid & ((positions != 0) | (batch.masked_lm_ids != 0))
    fail(np.any(padding, axis=1), "masked_lm padding is not 0")
    body_end = batch.lengths[:, None] - vocab.frame.suffix.size
    outside = valid & ((positions < vocab.frame.prefix.size) | (positions >= body_end))
    fail(np.any(outside, axis=1), "position outside the sequence")
    ascending = np.diff(np.where(valid, positions, seq + slot), axis=1) > 0
    fail(~np.all(ascending, axis=1), "positions not strictly ascending")
    originals = np.clip(batch.masked_lm_ids, 0, vocab.size - 1)
    fail(np.any(valid & vocab.special_lookup()[originals], axis=1), "a special token was selected")
    blank = np.isin(originals, vocab.blank_ids)
    fail(np.any(valid & blank, axis=1), "a blank token (whitespace alone) was selected")
    if "labels" in extra:
        inside = dataclasses.replace(batch, masked_lm_positions=np.clip(positions, 0, seq - 1))  # as reported
        fail(np.any(records.labels(inside) != extra["labels"], axis=1), "labels disagree with masked_lm_*")
    return valid


def _check_replacements(batch: MaskedBatch, valid, vocab, masking: MaskingConfig, fail) -> dict:
    """The prediction count rule, and each selected token's replacement; returns the replacement counts."""
    n, seq = batch.input_ids.shape
    special = vocab.unselectable_lookup()
    # The original sequence, to count candidates and classify replacements.
    original = batch.input_ids.copy()
    r, c = np.nonzero(valid)
    safe = np.clip(batch.masked_lm_positions[r, c], 0, seq - 1)
    replaced = batch.input_ids[r, safe]
    original[r, safe] = batch.masked_lm_ids[r, c]
    in_sequence = np.arange(seq)[None, :] < batch.lengths[:, None]
    candidates = np.sum(~special[np.clip(original, 0, vocab.size - 1)] & in_sequence, axis=1)
    expected = prediction_counts(batch.lengths, candidates, masking)
    if masking.mask_count == "exact" and masking.masking != "word":  # a word that does not fit is skipped
        fail(batch.num_predictions != expected, "prediction count breaks min(max_pred, max(1, round(n*p)))")
    else:
        limit = expected if masking.mask_count == "exact" else masking.max_predictions_per_seq
        fail(batch.num_predictions > limit, "more predictions than the count rule allows")
    is_mask = replaced == vocab.mask_id
    is_same = (replaced == batch.masked_lm_ids[r, c]) & ~is_mask
    is_random = ~is_mask & ~is_same
    bad = np.zeros(n, dtype=bool)
    bad[r[is_random & ~np.isin(replaced, vocab.random_ids)]] = True
    fail(bad, "a selected token was replaced by a special or reserved token")
    return {"mask": int(is_mask.sum()), "random": int(is_random.sum()), "same": int(is_same.sum())}


def check_batch(
    batch: MaskedBatch,
    extra: dict,
    *,
    vocab,
    masking: MaskingConfig,
    report,  # verify.Report: where problems, outcomes and masked runs are counted
    where: str,
    first: int = 0,
    several_pieces: bool = False,
):
    """The frame and masking invariants of every record of a slice of a shard, which starts at record
    ``first``; ``extra`` has the raw columns."""

    def fail(mask, what):
        for i in np.nonzero(mask)[0][:3]:
            report.problem(where, f"record {first + i}: {what}")

    _check_frame(batch, extra, vocab, fail, several_pieces)
    if batch.unmasked:
        _check_word_starts(batch, vocab, fail)
        return
    valid = _check_predictions(batch, extra, vocab, fail)
    report.outcomes.update(_check_replacements(batch, valid, vocab, masking, fail))
    if masking.masking == "span":
        report.runs[where.rsplit(".", 1)[-1]] += masked_runs(batch.masked_lm_positions, valid)


def masked_runs(positions: np.ndarray, valid: np.ndarray) -> int:
    """How many runs of consecutive positions the predictions make (abutting spans make one run)."""
    follows = np.zeros_like(valid)
    follows[:, 1:] = valid[:, 1:] & (np.diff(positions, axis=1) == 1)
    return int((valid & ~follows).sum())


def _check_word_starts(batch: MaskedBatch, vocab, fail):
    """An unmasked output's word starts: 0 or 1, and 1 only at a real token of text (not the frame's)."""
    starts = batch.word_starts
    fail(np.any((starts != 0) & (starts != 1), axis=1), "word_starts not 0 or 1")
    real = np.arange(starts.shape[1])[None, :] < batch.lengths[:, None]
    framing = np.isin(batch.input_ids, [vocab.pad_id, *vocab.frame.pair_ids()])
    fail(
        np.any((starts == 1) & (~real | framing), axis=1), "a word starts at padding or at the frame's tokens"
    )
