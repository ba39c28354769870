"""A tokenizer as transformers' ``AutoTokenizer`` loads it from a folder: ``tokenizer.json`` with the
frame in its post-processor, and ``tokenizer_config.json`` and ``special_tokens_map.json`` naming the
special tokens by role (what ``mlmprep run`` reads back beside a tokenizer, too)."""

import json

from tokenizers import Tokenizer, processors

from mlmprep.transforms import frames
from mlmprep.transforms.tokenize import ROLES, Vocabulary


def _template(items, token) -> list[str]:
    """A frame's items as TemplateProcessing's pieces: ``$A``, ``[CLS]``, with ``:1`` for type id 1."""
    return [(f"${i}" if isinstance(i, str) else token(i)) + (f":{t}" if t else "") for i, t in items]


def framed(tokenizer: Tokenizer, frame: frames.Frame) -> Tokenizer:
    """The tokenizer with ``frame`` as its post-processor, where its own frames nothing (a vocab.txt's)."""
    if frames.parse(tokenizer.to_str()) is None:
        ids = frame.pair_ids()
        tokenizer.post_processor = processors.TemplateProcessing(
            single=_template(frame.single, tokenizer.id_to_token),
            pair=_template(frame.pair, tokenizer.id_to_token),
            special_tokens=[(tokenizer.id_to_token(i), i) for i in ids],
        )
    return tokenizer


def _entry(tokenizer: Tokenizer, token_id: int):
    """A special token as transformers writes it: its text, or its stripping rules where it has any."""
    added = tokenizer.get_added_tokens_decoder().get(token_id)
    text = tokenizer.id_to_token(token_id)
    if added is None or not (added.lstrip or added.rstrip):
        return text
    return {
        "content": text,
        "lstrip": added.lstrip,
        "rstrip": added.rstrip,
        "normalized": added.normalized,
        "single_word": added.single_word,
    }


def transformers_files(tokenizer: Tokenizer, vocab: Vocabulary, max_seq_length: int | None = None) -> dict:
    """File name -> text of the tokenizer's folder; its frame and roles are ``vocab``'s."""
    tokenizer = framed(Tokenizer.from_str(tokenizer.to_str()), vocab.frame)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = False
    specials = {}
    for role in ROLES:
        token_id = getattr(vocab, f"{role}_id")
        if token_id is not None:
            specials[f"{role}_token"] = _entry(tokenizer, token_id)
    if vocab.tokens.get("cls") == "<s>":  # RoBERTa's names: its bos and eos too
        specials.update(bos_token=specials["cls_token"], eos_token=specials["sep_token"])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # Segment B's type id 0 (RoBERTa's frame): type ids carry nothing, as RoBERTa's tokenizer says.
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]
        if vocab.frame.b_type
        else ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    if max_seq_length:
        config["model_max_length"] = max_seq_length
    files = {
        "tokenizer.json": tokenizer.to_str(),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(specials, indent=2),
    }
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("type") == "WordPiece":  # BERT's slow tokenizer and other tools read vocab.txt
        ordered = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        if [i for _, i in ordered] == list(range(len(ordered))):
            files["vocab.txt"] = "".join(f"{token}\n" for token, _ in ordered)
    return files
