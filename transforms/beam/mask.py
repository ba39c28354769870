"""The masking step on Beam: packed sequences to masked record rows, ``dupe_factor`` copies each."""

import numpy as np

from mlmprep.transforms import keys, records
from mlmprep.transforms.beam.counting import CountingDoFn
from mlmprep.transforms.mask import MaskingConfig, mask_batch, mask_rows
from mlmprep.transforms.tokenize import id_word_starts


class MaskSequences(CountingDoFn):
    """SequenceBatch -> Arrow record rows (``records.to_rows``), ``dupe_factor`` copies of each sequence.

    One record batch per input batch: records travel in batches to keep
    Beam's per-element cost off the hot path.
    """

    def __init__(
        self,
        *,
        config: MaskingConfig,
        vocab,
        seed: int,
        dupe_factor: int,
        max_seq_length: int,
        word_source: str | None = None,
    ):
        super().__init__()
        self._config = config
        self._vocab = vocab
        self._seed = seed
        self._dupe_factor = dupe_factor
        self._ids = records.id_type(vocab.size, max_seq_length)
        self._rows = mask_rows(max_seq_length)
        self._is_special = None
        self._word_source = word_source  # tokenize.ID_WORD_SOURCES: words read off the ids here
        self._word_starts = None

    def setup(self):
        self._is_special = self._vocab.unselectable_lookup()
        if self._word_source is not None:
            self._word_starts = id_word_starts(self._vocab, self._word_source)

    def _words(self, batch, rows):
        """bool [n, L]: where words start in these rows, carried with them or read off their ids."""
        if batch.word_starts is not None:
            return batch.word_starts[rows]
        return None if self._word_starts is None else self._word_starts[batch.input_ids[rows]]

    def process(self, batch):
        # Slices of bounded size: one long document can make a batch of many
        # thousand sequences, and masking holds several float arrays per token.
        for start in range(0, len(batch.lengths), self._rows):
            rows = slice(start, start + self._rows)
            pieces = batch.pieces_of(rows)  # where packing placed them: position ids restart at each
            for dupe in range(self._dupe_factor):
                rng_keys = keys.record_keys(batch.keys[rows], seed=self._seed, dupe=dupe)
                if self._config.masking == "none":  # the trainer masks: the words are kept instead
                    masked = records.unmasked(
                        batch.input_ids[rows], batch.lengths[rows], self._words(batch, rows)
                    )
                else:
                    masked = self._mask(batch, rows, rng_keys)
                masked.pieces, masked.piece_lengths = pieces
                masked.piece_sources = batch.piece_sources_of(rows)
                if batch.segment_starts is not None:
                    masked.segment_starts = batch.segment_starts[rows]
                    masked.next_sentence_labels = batch.pair_labels[rows]
                if self._config.masking != "none":
                    self.count("sequences_without_predictions", int((masked.num_predictions == 0).sum()))
                if masked.spans is not None:
                    for name, column in (("span_words", 0), ("span_tokens", 1)):
                        for length, n in enumerate(np.bincount(masked.spans[:, column]).tolist()):
                            if n:
                                self.count(f"{name}.{length}", n)
                yield records.to_rows(batch.splits[rows], rng_keys >> np.uint64(1), masked, self._ids)

    def _mask(self, batch, rows, rng_keys):
        return mask_batch(
            batch.input_ids[rows],
            batch.lengths[rows],
            rng_keys,
            config=self._config,
            is_special=self._is_special,
            mask_id=self._vocab.mask_id,
            random_ids=self._vocab.random_ids,
            word_starts=self._words(batch, rows),
        )
