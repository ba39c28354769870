"""The encoder of every model the trainer builds: BERT's, for rows of one piece or packed rows of several,
and ELECTRA's generator and discriminator, which share their embeddings.

keras-hub's ``BertBackbone`` takes no position ids, no attention mask, no
embeddings narrower than the encoder, and no other model's embeddings.
``Encoder`` builds BertBackbone's own keras-hub layers, under its names
(``token_embedding``, ``transformer_layer_0``, ``pooled_dense``, ...) and in
its order, so that for one seed it starts from BertBackbone's very weights,
and keras-hub's ``BertMaskedLM``, checkpoints and ``mlmprep export`` treat
it as a BertBackbone. On top of that graph it can:

- take ``position_ids`` (``packed``): each piece of a best-fit packed row
  gets the position embeddings it would get alone, and attention stays
  inside each piece (``PieceAttentionMask``), so a packed row's outputs are
  its pieces' outputs run one by one (tests/test_packed_model.py);
- project embeddings of ``embedding_dim`` to its width (ELECTRA's);
- use another encoder's embedding layers (``shared_embeddings``: ELECTRA's
  discriminator shares its generator's).
"""

import keras
import keras_hub
from keras import ops


@keras.saving.register_keras_serializable(package="mlmprep")
def gelu_tanh(x):
    """GELU's tanh approximation: Google's BERT's ``gelu``, in the encoder and in the masked-LM head."""
    return keras.activations.gelu(x, approximate=True)


def initializer():
    return keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's and ELECTRA's


@keras.saving.register_keras_serializable(package="mlmprep")
class PieceAttentionMask(keras.layers.Layer):
    """bool [B, L, L]: query i may attend to key j when both are in one piece (and j is a real token).

    A piece runs from a real token with position id 0 to the next; a padding
    query is given the last piece's keys, so that no softmax row is empty.
    Written by hand: keras-hub builds padding and causal masks, not this
    block-diagonal one, which its ``TransformerEncoder`` takes as
    ``attention_mask``.
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
class Encoder(keras_hub.models.Backbone):
    """BERT's encoder (BertBackbone's arguments and layers), for every objective.

    Beyond BertBackbone's arguments: ``packed`` adds a ``position_ids``
    input and keeps attention inside each piece; ``embedding_dim`` (default
    ``hidden_dim``) is the embeddings' width, projected to ``hidden_dim``
    where it differs; ``approximate_gelu`` picks the encoder's GELU (BERT's
    tanh approximation, or the exact one of Hugging Face's ELECTRA);
    ``pooled`` adds BERT's pooler on the first token (a pair head's input).
    ``shared_embeddings``, an encoder whose embedding layers this one uses,
    is not part of the config: the model that shares them builds both.
    Outputs ``sequence_output`` (and ``pooled_output``).
    """

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
        embedding_dim=None,
        packed=False,
        approximate_gelu=True,
        layer_norm_epsilon=1e-12,
        pooled=True,
        shared_embeddings=None,
        dtype=None,
        **kwargs,
    ):
        embedding_dim = embedding_dim or hidden_dim
        (
            self.token_embedding,
            self.position_embedding,
            self.segment_embedding,
            self.embeddings_add,
            self.embeddings_layer_norm,
            self.embeddings_dropout,
        ) = (
            shared_embeddings.embedding_layers
            if shared_embeddings is not None
            else (
                keras_hub.layers.ReversibleEmbedding(
                    vocabulary_size,
                    embedding_dim,
                    embeddings_initializer=initializer(),
                    dtype=dtype,
                    name="token_embedding",
                ),
                keras_hub.layers.PositionEmbedding(
                    max_sequence_length, initializer=initializer(), dtype=dtype, name="position_embedding"
                ),
                keras.layers.Embedding(
                    num_segments,
                    embedding_dim,
                    embeddings_initializer=initializer(),
                    dtype=dtype,
                    name="segment_embedding",
                ),
                keras.layers.Add(dtype=dtype, name="embeddings_add"),
                keras.layers.LayerNormalization(
                    epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm"
                ),
                keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout"),
            )
        )
        self.embeddings_projection = None
        if embedding_dim != hidden_dim:
            self.embeddings_projection = keras.layers.Dense(
                hidden_dim, kernel_initializer=initializer(), dtype=dtype, name="embeddings_projection"
            )
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                activation=gelu_tanh if approximate_gelu else "gelu",
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=initializer(),
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.pooled_dense = None
        if pooled:
            self.pooled_dense = keras.layers.Dense(
                hidden_dim,
                kernel_initializer=initializer(),
                activation="tanh",
                dtype=dtype,
                name="pooled_dense",
            )
        self.piece_attention_mask = None
        if packed:
            self.piece_attention_mask = PieceAttentionMask(dtype=dtype, name="piece_attention_mask")

        names = ["token_ids", "segment_ids", "padding_mask", *(["position_ids"] if packed else [])]
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}
        tokens = self.token_embedding(inputs["token_ids"])
        positions = self.position_embedding(tokens, positions=inputs.get("position_ids"))
        x = self.embeddings_add((tokens, positions, self.segment_embedding(inputs["segment_ids"])))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        if self.embeddings_projection is not None:
            x = self.embeddings_projection(x)
        attention_mask = None
        if packed:
            attention_mask = self.piece_attention_mask(inputs["position_ids"], inputs["padding_mask"])
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=inputs["padding_mask"], attention_mask=attention_mask)
        outputs = {"sequence_output": x}
        if pooled:
            outputs["pooled_output"] = self.pooled_dense(x[:, 0, :])
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.embedding_dim = embedding_dim
        self.packed = packed
        self.approximate_gelu = approximate_gelu
        self.layer_norm_epsilon = layer_norm_epsilon
        self.pooled = pooled

    @property
    def embedding_layers(self) -> tuple:
        """The token, position and segment embeddings, their sum, layer norm and dropout."""
        return (
            self.token_embedding,
            self.position_embedding,
            self.segment_embedding,
            self.embeddings_add,
            self.embeddings_layer_norm,
            self.embeddings_dropout,
        )

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
            embedding_dim=self.embedding_dim,
            packed=self.packed,
            approximate_gelu=self.approximate_gelu,
            layer_norm_epsilon=self.layer_norm_epsilon,
            pooled=self.pooled,
        )
        return config
