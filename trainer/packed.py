"""BERT on packed rows: keras-hub's BertBackbone layers, attending only inside each piece of a row.

Best-fit packing puts several documents in one row, each framed on its own,
with ``position_ids`` restarting at 0 at each one's first token. This
backbone takes those ids as an input: each piece gets the position
embeddings it would get alone, and a block-diagonal attention mask keeps
every token's attention inside its own piece, so a packed row's outputs are
its pieces' outputs run one by one (tests/test_packed_model.py), at a
fraction of the padding. Its layers are BertBackbone's own, under the same
names, so checkpoints, the MLM head's tied decoder and ``mlmprep export``
treat it as a BertBackbone.
"""

import keras
import keras_hub
from keras import ops


@keras.saving.register_keras_serializable(package="mlmprep")
class PieceAttentionMask(keras.layers.Layer):
    """bool [B, L, L]: query i may attend to key j when both are in one piece (and j is a real token).

    A piece runs from a real token with position id 0 to the next; a padding
    query is given the last piece's keys, so that no softmax row is empty.
    """

    def call(self, position_ids, padding_mask):
        real = ops.cast(padding_mask, "bool")
        starts = ops.logical_and(ops.equal(position_ids, 0), real)
        piece = ops.cumsum(ops.cast(starts, "int32"), axis=1)
        same = ops.equal(ops.expand_dims(piece, 2), ops.expand_dims(piece, 1))
        return ops.logical_and(same, ops.expand_dims(real, 1))

    def compute_output_shape(self, position_ids_shape, padding_mask_shape):
        return (*position_ids_shape, position_ids_shape[-1])


@keras.saving.register_keras_serializable(package="mlmprep")
class PackedBertBackbone(keras_hub.models.Backbone):
    """BertBackbone's encoder with a ``position_ids`` input: position embeddings looked up by id, and
    attention kept inside each piece (``PieceAttentionMask``). Arguments are BertBackbone's."""

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        dtype=None,
        **kwargs,
    ):
        # BertBackbone's layers, built as it builds them; only the graph below is this class's.
        bert = keras_hub.models.BertBackbone(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            dtype=dtype,
        )
        self.token_embedding = bert.token_embedding
        self.position_embedding = bert.position_embedding
        self.segment_embedding = bert.segment_embedding
        self.embeddings_add = bert.embeddings_add
        self.embeddings_layer_norm = bert.embeddings_layer_norm
        self.embeddings_dropout = bert.embeddings_dropout
        self.transformer_layers = bert.transformer_layers
        self.pooled_dense = bert.pooled_dense
        self.piece_attention_mask = PieceAttentionMask(dtype=dtype, name="piece_attention_mask")

        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "segment_ids": keras.Input(shape=(None,), dtype="int32", name="segment_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
            "position_ids": keras.Input(shape=(None,), dtype="int32", name="position_ids"),
        }
        tokens = self.token_embedding(inputs["token_ids"])
        positions = self.position_embedding(tokens, positions=inputs["position_ids"])
        segments = self.segment_embedding(inputs["segment_ids"])
        x = self.embeddings_add((tokens, positions, segments))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        attention_mask = self.piece_attention_mask(inputs["position_ids"], inputs["padding_mask"])
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=inputs["padding_mask"], attention_mask=attention_mask)
        outputs = {"sequence_output": x, "pooled_output": self.pooled_dense(x[:, 0, :])}
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            max_sequence_length=self.max_sequence_length,
            num_segments=self.num_segments,
        )
        return config
