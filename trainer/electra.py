"""ELECTRA's replaced-token detection (Clark et al., 2020) on the shards' masked positions.

A small generator, a masked LM a fraction of the discriminator's width,
fills the masked positions with tokens sampled from its predictions; the
discriminator tells, at every real position, replaced tokens from
originals. The loss is the generator's masked-LM loss plus 50 times the
discriminator's. Both share the token, position and segment embeddings and
their layer norm, as the paper's models do; each projects them to its own
width where that differs.

The layers are keras-hub's (ReversibleEmbedding, PositionEmbedding,
TransformerEncoder, MaskedLMHead) with Hugging Face ELECTRA's activation
(the exact GELU) and layer-norm epsilon (1e-12) throughout, so that
``mlmprep export`` writes an ``ElectraForPreTraining`` and an
``ElectraForMaskedLM`` computing these very logits.
"""

import math

import keras
import keras_hub
from keras import ops

from mlmprep.trainer.packed import PieceAttentionMask

DISCRIMINATOR_WEIGHT = 50.0  # the paper's lambda
GENERATOR_FRACTION = 0.25  # the generator's width over the discriminator's (the paper's 1/4 to 1/2)
LAYER_NORM_EPSILON = 1e-12  # Hugging Face ELECTRA's
ACTIVATION = "gelu"  # the exact GELU: Hugging Face ELECTRA's hidden_act and generator head
REPLACED_SHARE = 0.15  # the share of tokens replaced at BERT's masking rate: where the discriminator starts


class ElectraConfigError(ValueError):
    """A generator that cannot be built beside this discriminator."""


def generator_config(config: dict, fraction: float) -> dict:
    """The generator's widths: the discriminator's times ``fraction``, as many layers, whole heads."""
    if not 0 < fraction <= 1:
        raise ElectraConfigError(
            f"--generator_fraction must be in (0, 1], got {fraction}: the generator is the smaller model "
            "(a generator as large as the discriminator or larger makes its task too hard to learn from)"
        )
    hidden = max(1, round(config["hidden_dim"] * fraction))
    heads = max(1, round(config["num_heads"] * fraction))
    while hidden % heads:
        heads -= 1
    return {
        **config,
        "hidden_dim": hidden,
        "num_heads": heads,
        "intermediate_dim": max(1, round(config["intermediate_dim"] * fraction)),
    }


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's and ELECTRA's


def _inputs(with_positions: bool, packed: bool) -> dict:
    names = ["token_ids", "segment_ids", "padding_mask", *(["position_ids"] if packed else [])]
    names += ["mask_positions"] if with_positions else []
    return {n: keras.Input(shape=(None,), dtype="int32", name=n) for n in names}


@keras.saving.register_keras_serializable(package="mlmprep")
class ReplacedTokens(keras.layers.Layer):
    """The discriminator's input and labels: the generator's samples put at the masked positions.

    Samples are drawn from the generator's softmax (no gradient flows through
    them, as in the paper); a sample that happens to be the original token
    counts as original.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, logits, token_ids, mask_positions, mask_ids, mask_weights, padding_mask):
        batch, predictions = ops.shape(mask_positions)[0], ops.shape(mask_positions)[1]
        flat = ops.reshape(ops.cast(logits, "float32"), (batch * predictions, -1))
        samples = ops.reshape(
            keras.random.categorical(flat, 1, seed=self.seed_generator), (batch, predictions)
        )
        samples = ops.stop_gradient(ops.cast(samples, "int32"))
        rows = ops.repeat(ops.expand_dims(ops.arange(batch, dtype="int32"), 1), predictions, axis=1)
        indices = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(mask_positions, (-1,))], axis=1)
        # Unused prediction slots (weight 0) write back what is there already.
        current = ops.take_along_axis(token_ids, mask_positions, axis=1)
        used = mask_weights > 0
        original = ops.scatter_update(
            token_ids, indices, ops.reshape(ops.where(used, mask_ids, current), (-1,))
        )
        corrupted = ops.scatter_update(
            token_ids, indices, ops.reshape(ops.where(used, samples, current), (-1,))
        )
        replaced = ops.cast(ops.not_equal(corrupted, original), "float32") * ops.cast(padding_mask, "float32")
        return corrupted, replaced

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="mlmprep")
class ElectraPretrainer(keras.Model):
    """ELECTRA's generator and discriminator, trained together (``compute_loss``).

    ``generator`` and ``discriminator`` are functional models over the same
    embedding layers: each runs on its own (``mlmprep export`` writes each as
    a Hugging Face model). Arguments are BertBackbone's (the discriminator's
    shapes), the generator's width as a fraction of them, and the embeddings'
    width (default: the discriminator's).
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
        generator_fraction=GENERATOR_FRACTION,
        discriminator_weight=DISCRIMINATOR_WEIGHT,
        packed=False,
        seed=None,
        replaced_share=REPLACED_SHARE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.arguments = dict(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            embedding_dim=embedding_dim or hidden_dim,
            generator_fraction=generator_fraction,
            discriminator_weight=discriminator_weight,
            packed=packed,
            seed=seed,
            replaced_share=replaced_share,
        )
        self.generator_shape = generator_config(self.arguments, generator_fraction)
        embedding_dim = self.arguments["embedding_dim"]
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size, embedding_dim, embeddings_initializer=_initializer(), name="token_embedding"
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            max_sequence_length, initializer=_initializer(), name="position_embedding"
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments, embedding_dim, embeddings_initializer=_initializer(), name="segment_embedding"
        )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, name="embeddings_dropout")
        self.piece_attention_mask = PieceAttentionMask(name="piece_attention_mask") if packed else None

        inputs = _inputs(with_positions=True, packed=packed)
        sequence = self._encode("generator", self.generator_shape, inputs)
        self.generator_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=vocabulary_size,
            token_embedding=self.token_embedding,
            intermediate_activation=ACTIVATION,
            layer_norm_epsilon=LAYER_NORM_EPSILON,
            kernel_initializer=_initializer(),
            name="generator_head",
        )
        self.generator = keras.Model(
            inputs, self.generator_head(sequence, inputs["mask_positions"]), name="generator"
        )

        inputs = _inputs(with_positions=False, packed=packed)
        sequence = self._encode("discriminator", self.arguments, inputs)
        self.discriminator_dense = keras.layers.Dense(
            hidden_dim, activation=ACTIVATION, kernel_initializer=_initializer(), name="discriminator_dense"
        )
        # The bias starts at the log-odds of a token being replaced, so that the discriminator starts at the
        # prior rather than reaching it through its hidden states, which collapses them (every position the
        # same logit) at a tiny model's learning rates.
        self.discriminator_prediction = keras.layers.Dense(
            1,
            kernel_initializer=_initializer(),
            bias_initializer=keras.initializers.Constant(math.log(replaced_share / (1 - replaced_share))),
            name="discriminator_prediction",
        )
        logits = ops.squeeze(self.discriminator_prediction(self.discriminator_dense(sequence)), -1)
        self.discriminator = keras.Model(inputs, logits, name="discriminator")
        self.replaced_tokens = ReplacedTokens(seed, name="replaced_tokens")

        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.masked_accuracy = keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")
        self.discriminator_accuracy = keras.metrics.BinaryAccuracy(name="discriminator_accuracy")
        self.discriminator_auc = keras.metrics.AUC(name="discriminator_auc", from_logits=True)
        self.built = True  # every layer is built with the two models above

    def _encode(self, side: str, shape: dict, inputs: dict):
        """The shared embeddings, projected to this side's width, then this side's encoder layers."""
        tokens = self.token_embedding(inputs["token_ids"])
        if "position_ids" in inputs:
            positions = self.position_embedding(tokens, positions=inputs["position_ids"])
        else:
            positions = self.position_embedding(tokens)
        x = tokens + positions + self.segment_embedding(inputs["segment_ids"])
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        if shape["hidden_dim"] != self.arguments["embedding_dim"]:
            projection = keras.layers.Dense(
                shape["hidden_dim"], kernel_initializer=_initializer(), name=f"{side}_embeddings_projection"
            )
            setattr(self, f"{side}_embeddings_projection", projection)
            x = projection(x)
        attention_mask = None
        if self.piece_attention_mask is not None:
            attention_mask = self.piece_attention_mask(inputs["position_ids"], inputs["padding_mask"])
        layers = [
            keras_hub.layers.TransformerEncoder(
                num_heads=shape["num_heads"],
                intermediate_dim=shape["intermediate_dim"],
                activation=ACTIVATION,
                dropout=shape["dropout"],
                layer_norm_epsilon=LAYER_NORM_EPSILON,
                kernel_initializer=_initializer(),
                name=f"{side}_transformer_layer_{i}",
            )
            for i in range(shape["num_layers"])
        ]
        setattr(self, f"{side}_layers", layers)
        for layer in layers:
            x = layer(x, padding_mask=inputs["padding_mask"], attention_mask=attention_mask)
        return x

    def call(self, inputs, training=False):
        generator_logits = self.generator(
            {k: v for k, v in inputs.items() if k in self.generator.input}, training=training
        )
        corrupted, replaced = self.replaced_tokens(
            generator_logits,
            inputs["token_ids"],
            inputs["mask_positions"],
            inputs["mask_ids"],
            inputs["mask_weights"],
            inputs["padding_mask"],
        )
        features = {k: v for k, v in inputs.items() if k in self.discriminator.input}
        discriminator_logits = self.discriminator({**features, "token_ids": corrupted}, training=training)
        return {"generator": generator_logits, "discriminator": discriminator_logits, "replaced": replaced}

    def _both_losses(self, x, y, y_pred, sample_weight):
        """(the generator's masked-LM loss, a mean over predictions; the discriminator's, a mean over real
        tokens)."""
        generator = keras.losses.sparse_categorical_crossentropy(y, y_pred["generator"], from_logits=True)
        weights = ops.cast(sample_weight, "float32")
        generator = ops.sum(generator * weights) / ops.maximum(ops.sum(weights), 1.0)
        real = ops.cast(x["padding_mask"], "float32")
        per_token = keras.losses.binary_crossentropy(
            ops.expand_dims(y_pred["replaced"], -1),
            ops.expand_dims(ops.cast(y_pred["discriminator"], "float32"), -1),
            from_logits=True,
        )
        discriminator = ops.sum(per_token * real) / ops.maximum(ops.sum(real), 1.0)
        return generator, discriminator

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        generator, discriminator = self._both_losses(x, y, y_pred, sample_weight)
        return generator + self.arguments["discriminator_weight"] * discriminator

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        generator, discriminator = self._both_losses(x, y, y_pred, sample_weight)
        self.generator_loss_tracker.update_state(generator)
        self.discriminator_loss_tracker.update_state(discriminator)
        self.masked_accuracy.update_state(y, y_pred["generator"], sample_weight=sample_weight)
        real = ops.cast(x["padding_mask"], "float32")
        logits = ops.cast(y_pred["discriminator"], "float32")
        self.discriminator_accuracy.update_state(y_pred["replaced"], ops.sigmoid(logits), sample_weight=real)
        self.discriminator_auc.update_state(y_pred["replaced"], logits, sample_weight=real)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        trackers = [
            self.generator_loss_tracker,
            self.discriminator_loss_tracker,
            self.masked_accuracy,
            self.discriminator_accuracy,
            self.discriminator_auc,
        ]
        return [m for m in super().metrics if all(m is not t for t in trackers)] + trackers

    def get_config(self):
        return {**self.arguments, "name": self.name, "trainable": self.trainable}
