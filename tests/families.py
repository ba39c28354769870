"""Tokenizers of the encoder families, built in the tests with the ``tokenizers`` library itself (no hub
downloads), each with its family's model, pre-tokenizer, specials and frame."""

import pathlib

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceUnigramTokenizer

VOCAB_SIZE = 1500

# The frames each family's post-processor gives, as the manifest writes them.
FRAMES = {
    "roberta": {"single": "<s> A </s>", "pair": "<s> A </s> </s> B </s>"},
    "xlmr": {"single": "<s> A </s>", "pair": "<s> A </s> </s> B </s>"},
    "albert": {"single": "[CLS] A [SEP]", "pair": "[CLS] A [SEP] B:1 [SEP]:1"},
    "modernbert": {"single": "[CLS] A [SEP]", "pair": "[CLS] A [SEP] B:1 [SEP]:1"},
    "deberta": {"single": "[CLS] A [SEP]", "pair": "[CLS] A [SEP] B:1 [SEP]:1"},
}
MASKS = {
    "roberta": "<mask>",
    "xlmr": "<mask>",
    "albert": "[MASK]",
    "modernbert": "[MASK]",
    "deberta": "[MASK]",
}


def _texts(paths) -> list[str]:
    return [pathlib.Path(p).read_text(encoding="utf-8") for p in paths]


def roberta(paths) -> Tokenizer:
    """The user's way: ``ByteLevelBPETokenizer`` with RoBERTa's specials, then RoBERTa's post-processor."""
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(
        _texts(paths), vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False
    )
    tokenizer = Tokenizer.from_str(bpe.to_str())
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>"))
    )
    return tokenizer


def xlmr(paths) -> Tokenizer:
    """SentencePiece-style Unigram (``SentencePieceUnigramTokenizer``) with XLM-R's specials and frame."""
    unigram = SentencePieceUnigramTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    unigram.train_from_iterator(
        _texts(paths), vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tokenizer = Tokenizer.from_str(unigram.to_str())
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("<s>", "</s>")],
    )
    return tokenizer


def _bert_template(tokenizer: Tokenizer) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )


def _unigram(paths, specials, *, lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD()]
    steps += [normalizers.StripAccents()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token=specials[1].content, show_progress=False
    )
    tokenizer.train_from_iterator(_texts(paths), trainer=trainer)
    tokenizer.post_processor = _bert_template(tokenizer)
    return tokenizer


def albert(paths) -> Tokenizer:
    """ALBERT's: Unigram with Metaspace, lower-cased, ``<pad> <unk> [CLS] [SEP] [MASK]``, BERT's frame."""
    names = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    return _unigram(paths, [AddedToken(n, special=True, normalized=False) for n in names], lowercase=True)


def deberta(paths) -> Tokenizer:
    """DeBERTa-v3's: SentencePiece Unigram with Metaspace, cased, BERT's names and frame."""
    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return _unigram(paths, [AddedToken(n, special=True, normalized=False) for n in names], lowercase=False)


def modernbert(paths) -> Tokenizer:
    """ModernBERT's: byte-level BPE with BERT's names ([MASK] taking the space before it), BERT's frame
    in a post-processor Sequence after ByteLevel."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    names = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    specials = [AddedToken(n, special=True, normalized=False, lstrip=n == "[MASK]") for n in names]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_texts(paths), trainer=trainer)
    tokenizer.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=False), _bert_template(tokenizer)]
    )
    return tokenizer


BUILDERS = {"roberta": roberta, "xlmr": xlmr, "albert": albert, "modernbert": modernbert, "deberta": deberta}
