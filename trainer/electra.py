"""ELECTRA's replaced-token detection (Clark et al., 2020) on the shards' masked positions.

A small generator, a masked LM a fraction of the discriminator's width,
fills the masked positions with tokens sampled from its predictions; the
discriminator tells, at every real position, replaced tokens from
originals. The loss is the generator's masked-LM loss plus 50 times the
discriminator's. Both share the token, position and segment embeddings and
their layer norm, as the paper's models do; each projects them to its own
width where that differs.

Each side is the trainer's one ``Encoder`` (keras-hub's layers) and a
keras-hub ``MaskedLMHead`` or ELECTRA's discriminator head, with Hugging Face
ELECTRA's activation (the exact GELU) and layer-norm epsilon (1e-12)
throughout, so that ``mlmprep export`` writes an ``ElectraForPreTraining``
and an ``ElectraForMaskedLM`` computing these very logits.
"""

import math

import keras
import keras_hub
from keras import ops

from mlmprep.trainer.encoder import Encoder, initializer

DISCRIMINATOR_WEIGHT = 50.0  # the paper's lambda
GENERATOR_FRACTION = 0.25  # the generator's width over the discriminator's (the paper's 1/4 to 1/2)
LAYER_NORM_EPSILON = 1e-12  # Hugging Face ELECTRA's
ACTIVATION = "gelu"  # the exact GELU: Hugging Face ELECTRA's hidden_act and generator head
REPLACED_SHARE = 0.15  # the share of tokens replaced at BERT's masking rate: where the discriminator starts


def generator_config(config: dict, fraction: float) -> dict:
    """The generator's widths: the discriminator's times ``fraction``, as many layers, whole heads.
    (``mlmprep train`` checks ``--generator_fraction`` before TensorFlow loads.)"""
    if not 0 < fraction <= 1:
        raise ValueError(
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

    ``generator`` (a masked LM) and ``discriminator`` are functional models on
    two ``Encoder``s that share the generator's embedding layers: each runs on
    its own (``mlmprep export`` writes each as a Hugging Face model). Arguments
    are the encoder's (the discriminator's shapes), the generator's width as a
    fraction of them, and the embeddings' width (default: the
    discriminator's). Its inputs are the generator's, with the masked
    positions' original ids and weights; its outputs the generator's logits,
    the discriminator's, and which tokens were replaced.
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
        dtype=None,
        **kwargs,
    ):
        shape = dict(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            num_segments=num_segments,
        )
        electra = dict(
            embedding_dim=embedding_dim or hidden_dim,
            packed=packed,
            approximate_gelu=False,
            layer_norm_epsilon=LAYER_NORM_EPSILON,
            pooled=False,
            dtype=dtype,
        )
        generator_encoder = Encoder(
            **generator_config(shape, generator_fraction), **electra, name="generator_encoder"
        )
        generator_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=vocabulary_size,
            token_embedding=generator_encoder.token_embedding,
            intermediate_activation=ACTIVATION,
            layer_norm_epsilon=LAYER_NORM_EPSILON,
            kernel_initializer=initializer(),
            dtype=dtype,
            name="generator_head",
        )
        inputs = {
            **generator_encoder.input,
            "mask_positions": keras.Input(shape=(None,), dtype="int32", name="mask_positions"),
        }
        sequence = generator_encoder(generator_encoder.input)["sequence_output"]
        generator = keras.Model(inputs, generator_head(sequence, inputs["mask_positions"]), name="generator")

        discriminator_encoder = Encoder(
            **shape, **electra, shared_embeddings=generator_encoder, name="discriminator_encoder"
        )
        discriminator_dense = keras.layers.Dense(
            hidden_dim,
            activation=ACTIVATION,
            kernel_initializer=initializer(),
            dtype=dtype,
            name="discriminator_dense",
        )
        # The bias starts at the log-odds of a token being replaced, so that the discriminator starts at the
        # prior rather than reaching it through its hidden states, which collapses them (every position the
        # same logit) at a tiny model's learning rates.
        discriminator_prediction = keras.layers.Dense(
            1,
            kernel_initializer=initializer(),
            bias_initializer=keras.initializers.Constant(math.log(replaced_share / (1 - replaced_share))),
            dtype=dtype,
            name="discriminator_prediction",
        )
        sequence = discriminator_encoder(discriminator_encoder.input)["sequence_output"]
        logits = ops.squeeze(discriminator_prediction(discriminator_dense(sequence)), -1)
        discriminator = keras.Model(discriminator_encoder.input, logits, name="discriminator")

        replaced_tokens = ReplacedTokens(seed, dtype=dtype, name="replaced_tokens")
        inputs = {
            **inputs,
            "mask_ids": keras.Input(shape=(None,), dtype="int32", name="mask_ids"),
            "mask_weights": keras.Input(shape=(None,), dtype="float32", name="mask_weights"),
        }
        generator_logits = generator({k: inputs[k] for k in generator.input})
        corrupted, replaced = replaced_tokens(
            generator_logits,
            inputs["token_ids"],
            inputs["mask_positions"],
            inputs["mask_ids"],
            inputs["mask_weights"],
            inputs["padding_mask"],
        )
        features = {k: inputs[k] for k in discriminator.input}
        outputs = {
            "generator": generator_logits,
            "discriminator": discriminator({**features, "token_ids": corrupted}),
            "replaced": replaced,
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.arguments = dict(
            **shape,
            embedding_dim=embedding_dim,
            generator_fraction=generator_fraction,
            discriminator_weight=discriminator_weight,
            packed=packed,
            seed=seed,
            replaced_share=replaced_share,
        )
        self.generator_encoder = generator_encoder
        self.generator_head = generator_head
        self.generator = generator
        self.discriminator_encoder = discriminator_encoder
        self.discriminator_dense = discriminator_dense
        self.discriminator_prediction = discriminator_prediction
        self.discriminator = discriminator
        self.replaced_tokens = replaced_tokens
        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.masked_accuracy = keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")
        self.discriminator_accuracy = keras.metrics.BinaryAccuracy(name="discriminator_accuracy")
        self.discriminator_auc = keras.metrics.AUC(name="discriminator_auc", from_logits=True)

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
