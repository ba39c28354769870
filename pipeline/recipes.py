"""Published pre-training recipes by name: the settings of ``mlmprep run`` and ``mlmprep train`` for them.

A recipe is a partial set of settings laid under the user's (``lay_under``):
a setting the user gives, by flag or build file, wins, and the job and the
trainer check the result as they check any settings. Settings the bundled
tools cannot follow are said in ``differs``, so that a recipe never silently
claims more than the data and the trainer do. docs/recipes.md's table is
``markdown_table()`` (a test keeps them equal).
"""

import dataclasses

from mlmprep.pipeline.errors import UsageError
from mlmprep.pipeline.settings import Settings


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str  # the paper and the repository the settings are read from
    run: dict  # mlmprep run: option name -> value
    train: dict  # mlmprep train: option name -> value (what the bundled trainer follows)
    differs: tuple[str, ...] = ()  # the recipe's settings these tools do not follow, and how they differ

    @property
    def max_seq_length(self) -> int:
        return self.run["max_seq_length"]


_BERT_RUN = {
    "max_seq_length": 128,
    "max_predictions_per_seq": 20,
    "masked_lm_prob": 0.15,
    "mask_token_ratio": 0.8,
    "random_token_ratio": 0.1,
    "masking": "token",
    "mask_count": "exact",
    "sentence_pairs": "nsp",
    "short_seq_prob": 0.1,
    "packing": "document",
    "dupe_factor": 10,
}
_BERT_TRAIN = {
    "objective": "mlm",
    "learning_rate": 1e-4,
    "warmup_fraction": 0.01,
    "weight_decay": 0.01,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-6,
}
_BERT_SOURCE = (
    "Devlin et al. 2019 (arXiv 1810.04805), google-research/bert create_pretraining_data.py, README"
)
_BERT_DIFFERS = (
    "batch 256 for 1M steps (900k at 128 tokens, 100k at 512): --batch_size and --steps are yours",
)

_MODERNBERT_RUN = {
    "max_seq_length": 1024,
    "packing": "best_fit",
    "sentence_pairs": "none",
    "masking": "none",
    "masked_lm_prob": 0.3,
    "mask_count": "bernoulli",
    "mask_token_ratio": 0.8,
    "random_token_ratio": 0.1,
}
_MODERNBERT_TRAIN = {
    "objective": "mlm",
    "dynamic_masking": True,
    "learning_rate": 8e-4,
    "warmup_fraction": 0.002,
    "weight_decay": 1e-5,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-6,
}
_MODERNBERT_MODEL = "the model is a BERT encoder, not ModernBERT's (RoPE, GeGLU, local-global attention)"

RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "bert",
            "BERT, phase 1",
            _BERT_SOURCE,
            _BERT_RUN,
            _BERT_TRAIN,
            _BERT_DIFFERS,
        ),
        Recipe(
            "bert-512",
            "BERT, phase 2",
            _BERT_SOURCE + "; 80 predictions as NVIDIA DeepLearningExamples' BERT phase 2",
            {**_BERT_RUN, "max_seq_length": 512, "max_predictions_per_seq": 80},
            _BERT_TRAIN,
            _BERT_DIFFERS,
        ),
        Recipe(
            "roberta",
            "RoBERTa",
            "Liu et al. 2019 (arXiv 1907.11692) §4, Table 9; fairseq examples/roberta (base.yaml)",
            {
                "max_seq_length": 512,
                "packing": "concat",
                "sentence_pairs": "none",
                "masking": "none",
                "masked_lm_prob": 0.15,
                "mask_token_ratio": 0.8,
                "random_token_ratio": 0.1,
            },
            {
                "objective": "mlm",
                "dynamic_masking": True,
                "learning_rate": 6e-4,
                "warmup_fraction": 0.048,
                "weight_decay": 0.01,
                "adam_beta2": 0.98,
                "adam_epsilon": 1e-6,
            },
            (
                "FULL-SENTENCES ends a sequence at a sentence end; concat packing fills every slot, cutting "
                "the last sentence (documents are joined by the separator, as there)",
                "batch 8k for 500k steps: --batch_size and --steps are yours",
            ),
        ),
        Recipe(
            "albert",
            "ALBERT",
            "Lan et al. 2020 (arXiv 1909.11942); google-research/albert create_pretraining_data.py",
            {
                "max_seq_length": 512,
                "max_predictions_per_seq": 20,
                "masked_lm_prob": 0.15,
                "mask_token_ratio": 0.8,
                "random_token_ratio": 0.1,
                "masking": "span",
                "span_lengths": "harmonic",
                "max_span_words": 3,
                "sentence_pairs": "sop",
                "short_seq_prob": 0.1,
                "packing": "document",
                "dupe_factor": 40,
            },
            {
                "objective": "mlm",
                "warmup_fraction": 0.025,
                "weight_decay": 0.01,
                "adam_beta2": 0.999,
                "adam_epsilon": 1e-6,
            },
            (
                "one 80/10/10 decision per n-gram (ALBERT decides per token); the n-gram that reaches the "
                "budget is cut there (ALBERT draws a shorter one)",
                "20 predictions at 512 tokens mask at most 3.9% of a full sequence, as the repository does",
                "LAMB at lr 0.00176, batch 4096, 125k steps: the trainer is AdamW (give --learning_rate)",
            ),
        ),
        Recipe(
            "spanbert",
            "SpanBERT",
            "Joshi et al. 2020 (arXiv 1907.10529); facebookresearch/SpanBERT pretraining/README.md",
            {
                "max_seq_length": 512,
                "masked_lm_prob": 0.15,
                "mask_token_ratio": 0.8,
                "random_token_ratio": 0.1,
                "masking": "span",
                "span_p": 0.2,
                "max_span_words": 10,
                "sentence_pairs": "none",
                "packing": "document",
            },
            {
                "objective": "mlm",
                "learning_rate": 1e-4,
                "warmup_fraction": 0.0042,
                "weight_decay": 0.01,
                "adam_beta2": 0.999,
                "adam_epsilon": 1e-8,
            },
            (
                "spans are masked once, in the data (SpanBERT masks anew each epoch: --recipe roberta's way, "
                "--masking none here and mlmprep train --masking span, does that)",
                "the span boundary objective (SBO) is not trained; random replacements are uniform over the "
                "vocabulary, SpanBERT's follow the corpus's unigram frequencies",
                "batch 256 for 2.4M steps: --batch_size and --steps are yours",
            ),
        ),
        Recipe(
            "electra",
            "ELECTRA-Small",
            "Clark et al. 2020 (arXiv 2003.10555); google-research/electra configure_pretraining.py, "
            "pretrain/pretrain_helpers.py",
            {
                "max_seq_length": 128,
                "max_predictions_per_seq": 19,
                "masked_lm_prob": 0.15,
                "mask_token_ratio": 0.85,
                "random_token_ratio": 0.0,
                "masking": "none",
                "sentence_pairs": "none",
                "packing": "document",
            },
            {
                "objective": "electra",
                "generator_fraction": 0.25,
                "dynamic_masking": True,
                "learning_rate": 5e-4,
                "warmup_fraction": 0.01,
                "weight_decay": 0.01,
                "adam_beta2": 0.999,
                "adam_epsilon": 1e-6,
            },
            (
                "single segments; ELECTRA's builder makes 90% of its examples two segments (no pair loss)",
                "Base and Large: 512 tokens (--max_seq_length 512), generator 1/3 for Base, mask 25% for "
                "Large; batch 128 for 1M steps: --batch_size and --steps are yours",
            ),
        ),
        Recipe(
            "modernbert",
            "ModernBERT, main phase",
            "Warner et al. 2024 (arXiv 2412.13663); AnswerDotAI/ModernBERT yamls/modernbert "
            "(pretraining_documentation branch), src/sequence_packer.py",
            _MODERNBERT_RUN,
            _MODERNBERT_TRAIN,
            (
                "warmup-stable-decay (constant after warmup, 1-sqrt decay at the end) and StableAdamW: the "
                "trainer decays linearly after warmup, with AdamW",
                "documents longer than a sequence are cut into pieces, packed (ModernBERT truncates them); "
                "special tokens are never selected (ModernBERT's collator may select them)",
                _MODERNBERT_MODEL,
            ),
        ),
        Recipe(
            "modernbert-8192",
            "ModernBERT, context extension",
            "Warner et al. 2024 (arXiv 2412.13663) §2.2; AnswerDotAI/ModernBERT yamls/modernbert",
            {**_MODERNBERT_RUN, "max_seq_length": 8192},
            {**_MODERNBERT_TRAIN, "learning_rate": 3e-4, "warmup_fraction": 0.0},
            (
                "a constant 3e-4 for 250B tokens, then a 1-sqrt decay: the trainer decays linearly",
                _MODERNBERT_MODEL,
            ),
        ),
    )
}

# A recipe's setting also counts as given where the user gave a setting that decides it: the cap is the
# recipe's at its length and rate, so a length or rate given makes it the default for those.
DECIDED_BY = {"max_predictions_per_seq": ("max_seq_length", "masked_lm_prob")}


def get(name: str) -> Recipe:
    """The recipe of that name; an unknown name is a UsageError that lists the known ones."""
    if name not in RECIPES:
        raise UsageError(f"--recipe {name!r} is not a known recipe; the recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def flags_text(settings: dict) -> str:
    """Settings as the flags that give them, as a user would type them."""
    return " ".join(_flag(k, v) for k, v in settings.items())


@dataclasses.dataclass(frozen=True)
class Applied:
    """What a recipe set, and which of its settings the user's own values replaced."""

    recipe: Recipe
    side: str  # "run" or "train"
    set: dict
    kept: dict  # the user's value of each setting of the recipe they gave

    def line(self) -> str:
        recipe = f"--recipe {self.recipe.name} ({self.recipe.title})"
        kept = f"; yours kept: {flags_text(self.kept)}" if self.kept else ""
        return f"mlmprep {self.side}: {recipe} set {flags_text(self.set)}{kept}"

    def record(self) -> dict:
        """The manifest's ``recipe`` entry."""
        return {
            "name": self.recipe.name,
            "title": self.recipe.title,
            "source": self.recipe.source,
            "set": self.set,
            "kept": self.kept,
            "train": self.recipe.train,
            "differs": list(self.recipe.differs),
        }

    def explain(self, error: UsageError) -> UsageError:
        """A failed check on settings the recipe set says so, and which settings they were."""
        named = [k for k in getattr(error, "names", ()) if k in self.set]
        if not named:
            return error
        settings = ", ".join(_flag(k, self.set[k]).replace("=", " ", 1) for k in named)
        return UsageError(f"--recipe {self.recipe.name} sets {settings}, which this run cannot take: {error}")


def lay_under(name: str | None, given: dict, side: str) -> tuple[dict, Applied | None]:
    """``given`` (values by setting name) over the settings of the recipe ``name`` on ``side`` ("run" or
    "train"), and what the recipe set; ``given`` itself where there is no recipe."""
    if name is None:
        return given, None
    recipe = get(name)
    ours, kept = {}, {}
    for setting, value in (recipe.run if side == "run" else recipe.train).items():
        users = [d for d in (setting, *DECIDED_BY.get(setting, ())) if d in given]
        if users:
            kept.update({d: given[d] for d in users})
        else:
            ours[setting] = value
    return {**ours, **given}, Applied(recipe, side, ours, kept)


def check_data(recipe: Recipe, data: Settings, made: dict | None, data_dir: str) -> None:
    """Training by a recipe needs data made for it: its sequence length and sentence pairs (not set here),
    or the ones the user chose when making the data with the same recipe (``made``: the data's manifest's
    recipe entry)."""
    made = made or {}
    chosen = made.get("kept", {}) if made.get("name") == recipe.name else {}
    length = data.packing.max_seq_length
    if length != recipe.max_seq_length and "max_seq_length" not in chosen:
        same = [r.name for r in RECIPES.values() if r.max_seq_length == length]
        hint = f" (--recipe {' or '.join(same)} trains on those)" if same else ""
        raise UsageError(
            f"--recipe {recipe.name} trains on {recipe.max_seq_length}-token sequences; --data {data_dir} "
            f"holds {length}-token ones{hint}"
        )
    pairs, wanted = data.pairs.mode, recipe.run.get("sentence_pairs", "none")
    if pairs != wanted and "sentence_pairs" not in chosen:
        raise UsageError(
            f"--recipe {recipe.name} trains on --sentence_pairs {wanted} data; --data {data_dir} was made "
            f"with --sentence_pairs {pairs}"
        )


def _cell(settings: dict) -> str:
    return "<br>".join(f"`{_flag(k, v)}`" for k, v in settings.items())


def markdown_table() -> str:
    """docs/recipes.md's table of recipes, made from the definitions above."""
    rows = [
        "| Recipe | `mlmprep run` sets | `mlmprep train` sets | Where these tools differ | Source |",
        "|---|---|---|---|---|",
    ]
    for r in RECIPES.values():
        differs = "<br>".join(f"• {d}" for d in r.differs) or "—"
        rows.append(
            f"| `{r.name}` ({r.title}) | {_cell(r.run)} | {_cell(r.train)} | {differs} | {r.source} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
