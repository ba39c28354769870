"""The models the trainer builds (``build``), on its one ``Encoder``: BERT's masked LM, with BERT's pair
head on sentence pairs, or ELECTRA's generator and discriminator.

keras-hub's ``BertMaskedLM`` is exactly the DESIGN's model (a transform of
dense + GELU + layer norm, then a decoder tied to the token embeddings plus
a bias, applied only at the masked positions), and its input names match the
shards' features one to one; it runs on an ``Encoder`` as on a BertBackbone.
Data of sentence pairs adds BERT's pair head (``BertPretrainer``).
"""

import json

import keras
import keras_hub

from mlmprep.pipeline.errors import UsageError
from mlmprep.trainer.electra import ElectraPretrainer
from mlmprep.trainer.encoder import Encoder, gelu_tanh, initializer
from mlmprep.trainer.schedule import WarmupLinearDecay

# Standard BERT shapes (tiny/small as in Turc et al., 2019; base/large as in Devlin et al.).
SIZES = {
    "tiny": dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512),
    "small": dict(num_layers=4, num_heads=8, hidden_dim=512, intermediate_dim=2048),
    "base": dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072),
    "large": dict(num_layers=24, num_heads=16, hidden_dim=1024, intermediate_dim=4096),
}


class TrainError(UsageError):
    """The model, its folder and the data do not belong together, or a flag is wrong: the user's one line."""


def default_learning_rate(backbone: dict) -> float:
    """A peak learning rate that learns within a few hundred steps: larger for smaller models, as the
    BERT miniatures were trained (Turc et al., 2019) and BERT-base and -large at 1e-4 (Devlin et al.)."""
    hidden = backbone["hidden_dim"]
    return 1e-3 if hidden <= 256 else 5e-4 if hidden <= 512 else 1e-4


def backbone_config(model: str, *, vocabulary_size: int, max_sequence_length: int) -> dict:
    """The encoder's arguments (BertBackbone's) for a size name or a JSON file of them."""
    if model in SIZES:
        config = dict(SIZES[model])
    else:
        try:
            with open(model, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise TrainError(
                f"--model is neither {'/'.join(SIZES)} nor a readable JSON config: {e}"
            ) from None
    if config.setdefault("vocabulary_size", vocabulary_size) != vocabulary_size:
        raise TrainError(
            f"model vocabulary_size {config['vocabulary_size']} != the data's vocabulary {vocabulary_size}"
        )
    if config.setdefault("max_sequence_length", max_sequence_length) < max_sequence_length:
        raise TrainError(
            f"model max_sequence_length {config['max_sequence_length']} < "
            f"the data's sequence length {max_sequence_length}"
        )
    return config


# The outputs of a model with both of BERT's pre-training heads.
MLM_OUTPUT, PAIR_OUTPUT = "mlm", "next_sentence"


def build(config: dict, *, dtype=None, pairs: bool = False, packed: bool = False) -> keras.Model:
    """keras-hub's BertMaskedLM on an ``Encoder`` of ``config``'s arguments, or with ``pairs`` a
    ``BertPretrainer`` (its heads and BERT's pair head); ``packed``: for rows of several pieces (best-fit
    packing). A config whose objective is "electra" builds an ``ElectraPretrainer`` of the config's
    (discriminator's) shapes."""
    if config.get("objective") == "electra":  # its own generator and discriminator; no pair head
        arguments = {k: v for k, v in config.items() if k != "objective"}
        return ElectraPretrainer(**arguments, packed=packed, dtype=dtype)
    backbone = Encoder(**config, packed=packed, dtype=dtype)
    if pairs:
        return BertPretrainer(backbone)
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


@keras.saving.register_keras_serializable(package="mlmprep")
class BertPretrainer(keras.Model):
    """BERT's two pre-training heads on an ``Encoder``, for sentence pairs (NSP or SOP).

    The masked-LM head is keras-hub's ``MaskedLMHead`` as ``BertMaskedLM``
    builds it (transform, layer norm, decoder tied to the token embeddings),
    but with the encoder's own GELU and layer-norm epsilon, as Google's BERT
    has them (keras-hub's has the exact GELU and 1e-5 there). The pair head is
    BERT's classifier of two logits on the pooled [CLS] output. Built from its
    backbone like a keras-hub task, so that a saved model comes back with its
    decoder still tied.
    """

    def __init__(self, backbone, **kwargs):
        kernel_initializer = initializer()  # one for both heads
        masked_lm_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=backbone.vocabulary_size,
            token_embedding=backbone.token_embedding,
            intermediate_activation=gelu_tanh,
            layer_norm_epsilon=1e-12,  # the encoder's, as in Google's BERT (keras-hub's head: 1e-5)
            kernel_initializer=kernel_initializer,
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )
        next_sentence_head = keras.layers.Dense(
            2, kernel_initializer=kernel_initializer, dtype=backbone.dtype_policy, name="next_sentence_head"
        )
        inputs = {
            **backbone.input,
            "mask_positions": keras.Input(shape=(None,), dtype="int32", name="mask_positions"),
        }
        encoded = backbone(backbone.input)
        outputs = {
            MLM_OUTPUT: masked_lm_head(encoded["sequence_output"], inputs["mask_positions"]),
            PAIR_OUTPUT: next_sentence_head(encoded["pooled_output"]),
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.masked_lm_head = masked_lm_head
        self.next_sentence_head = next_sentence_head

    def get_config(self):
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def masked_lm_logits(model, inputs):
    """The masked-LM logits of any of the models for a batch of inputs (numpy): ELECTRA's are its
    generator's."""
    if isinstance(model, ElectraPretrainer):
        model = model.generator
        inputs = {k: v for k, v in inputs.items() if k in model.input}
    outputs = model.predict(inputs, verbose=0)
    return outputs[MLM_OUTPUT] if isinstance(outputs, dict) else outputs


def compile_for_pretraining(
    model,
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float = 0.01,
    clipnorm: float = 1.0,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-6,
    jit_compile: bool | str = "auto",
):
    """BERT's recipe: AdamW (no decay on biases and layer norms), warmup then linear decay, clipping."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupLinearDecay(learning_rate, warmup_steps, total_steps),
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=adam_beta2,
        epsilon=adam_epsilon,
        clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "layer_norm"])
    # BERT's loss: a mean over the real (weight 1) predictions, not over the padded slots.
    masked_lm_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    masked_accuracy = keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")
    if isinstance(model, ElectraPretrainer):  # its loss and metrics are its own (compute_loss)
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
        return
    if not isinstance(model, BertPretrainer):
        model.compile(
            optimizer=optimizer,
            loss=masked_lm_loss,
            weighted_metrics=[masked_accuracy],
            jit_compile=jit_compile,
        )
        return
    # With pairs, BERT's loss is the sum of the two: the masked-LM mean and the pairs' mean over the batch.
    model.compile(
        optimizer=optimizer,
        loss={
            MLM_OUTPUT: masked_lm_loss,
            PAIR_OUTPUT: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        weighted_metrics={
            MLM_OUTPUT: [masked_accuracy],
            PAIR_OUTPUT: [keras.metrics.SparseCategoricalAccuracy(name="pair_accuracy")],
        },
        jit_compile=jit_compile,
    )


def train_flops_per_sequence(config: dict, sequence_length: int, predictions: int) -> float:
    """Model FLOPs of one training step (forward and backward, 3x forward) per sequence.

    Per layer and position: the Q/K/V/output projections and the
    feed-forward (2 FLOPs per weight), and attention scores and mixing
    (4 * sequence_length * hidden). The MLM head's transform and tied decoder
    run only at the predicted positions; embedding look-ups are free.
    """
    h, f = config["hidden_dim"], config["intermediate_dim"]
    layers, v, s = config["num_layers"], config["vocabulary_size"], sequence_length
    encoder = layers * s * (2 * (4 * h * h + 2 * h * f) + 4 * s * h)
    head = predictions * 2 * (h * h + h * v)
    return 3.0 * (encoder + head)
