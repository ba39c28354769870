"""Where a tokenizer puts its special tokens around one segment and around two.

The frame comes from the tokenizer's post-processor (BertProcessing,
RobertaProcessing, TemplateProcessing, also inside a Sequence), read from its
JSON because the Python objects do not expose a template's pair frame, and
then checked by encoding a dummy single and pair with the tokenizer itself:

  BERT, ALBERT, DeBERTa-v3, ModernBERT   [CLS] A [SEP]   [CLS] A [SEP] B:1 [SEP]:1
  RoBERTa, XLM-R                         <s> A </s>      <s> A </s> </s> B </s>   (B's type id 0)

A frame is stored as its items: a special token's id, or the segment
``"A"``/``"B"``, each with its type id.
"""

import dataclasses
import json

import numpy as np

A, B = "A", "B"
_FRAMING = ("TemplateProcessing", "BertProcessing", "RobertaProcessing")


class FrameError(ValueError):
    """The tokenizer's frame cannot be used."""


@dataclasses.dataclass(frozen=True)
class Frame:
    single: tuple[tuple[int | str, int], ...]  # (id or "A", type id)
    pair: tuple[tuple[int | str, int], ...]  # (id, "A" or "B", type id)

    def _ids(self, items, start: int, stop: int) -> np.ndarray:
        return np.array([i for i, _ in items[start:stop]], dtype=np.int32)

    @property
    def prefix(self) -> np.ndarray:
        """The single frame's special ids before the segment."""
        return self._ids(self.single, 0, _index(self.single, A))

    @property
    def suffix(self) -> np.ndarray:
        return self._ids(self.single, _index(self.single, A) + 1, len(self.single))

    @property
    def first_id(self) -> int | None:
        """The single frame's first token ([CLS], <s>): where each piece of a sequence starts."""
        return int(self.prefix[0]) if self.prefix.size else None

    @property
    def specials(self) -> int:
        """Special tokens the single frame adds."""
        return len(self.single) - 1

    @property
    def pair_prefix(self) -> np.ndarray:
        return self._ids(self.pair, 0, _index(self.pair, A))

    @property
    def middle(self) -> np.ndarray:
        """The specials between A and B (BERT's [SEP], RoBERTa's </s></s>)."""
        return self._ids(self.pair, _index(self.pair, A) + 1, _index(self.pair, B))

    @property
    def pair_suffix(self) -> np.ndarray:
        return self._ids(self.pair, _index(self.pair, B) + 1, len(self.pair))

    @property
    def pair_specials(self) -> int:
        return len(self.pair) - 2

    def pair_ids(self) -> list[int]:
        """Every special id either frame adds."""
        return sorted({i for i, _ in self.single + self.pair if not isinstance(i, str)})

    @property
    def b_type(self) -> int:
        """Segment B's type id (BERT 1, RoBERTa 0); A and the specials before B have type 0."""
        return self.pair[_index(self.pair, B)][1]

    def segment_starts(self, input_ids: np.ndarray) -> np.ndarray:
        """int32 [N]: where B starts in framed pairs: after the first run of the middle after the prefix
        (text never holds a special token, so the first one after A is the middle's)."""
        first = self.middle[0]
        after = input_ids[:, len(self.pair_prefix) :] == first
        return (np.argmax(after, axis=1) + len(self.pair_prefix) + len(self.middle)).astype(np.int32)

    def describe(self, token) -> dict:
        """Both frames in tokens (``token``: id -> text), as the manifest and ``inspect`` show them."""

        def words(items):
            names = (i if isinstance(i, str) else token(i) for i, _ in items)
            return " ".join(n + (f":{t}" if t else "") for n, (_, t) in zip(names, items))

        return {"single": words(self.single), "pair": words(self.pair)}


def _index(items, segment: str) -> int:
    return next(k for k, (i, _) in enumerate(items) if i == segment)


def _template(items: list[dict], special_tokens: dict) -> list[tuple[int | str, int]]:
    out = []
    for item in items:
        if "Sequence" in item:
            out.append((item["Sequence"]["id"], int(item["Sequence"]["type_id"])))
        else:
            special = item["SpecialToken"]
            for i in special_tokens[special["id"]]["ids"]:  # one name may stand for several ids
                out.append((int(i), int(special["type_id"])))
    return out


def _from_processor(processor: dict | None) -> Frame | None:
    if not processor:
        return None
    kind = processor.get("type")
    if kind == "Sequence":
        frames = [f for f in map(_from_processor, processor.get("processors", [])) if f is not None]
        if len(frames) > 1:
            raise FrameError("its post-processor Sequence frames sequences twice")
        return frames[0] if frames else None
    if kind not in _FRAMING:
        return None  # ByteLevel and friends add no tokens
    if kind == "TemplateProcessing":
        specials = processor.get("special_tokens", {})
        return Frame(
            tuple(_template(processor["single"], specials)), tuple(_template(processor["pair"], specials))
        )
    cls, sep = int(processor["cls"][1]), int(processor["sep"][1])
    if kind == "BertProcessing":
        return Frame(((cls, 0), (A, 0), (sep, 0)), ((cls, 0), (A, 0), (sep, 0), (B, 1), (sep, 1)))
    return Frame(((cls, 0), (A, 0), (sep, 0)), ((cls, 0), (A, 0), (sep, 0), (sep, 0), (B, 0), (sep, 0)))


def bert_frame(cls_id: int, sep_id: int) -> Frame:
    """``[CLS] A [SEP]`` and ``[CLS] A [SEP] B:1 [SEP]:1``: BERT's, for a tokenizer that frames nothing."""
    return _from_processor({"type": "BertProcessing", "cls": ["", cls_id], "sep": ["", sep_id]})


def parse(tokenizer_json_text: str) -> Frame | None:
    """The frame of a tokenizer's post-processor; None where it adds no special tokens."""
    frame = _from_processor(json.loads(tokenizer_json_text).get("post_processor"))
    if frame is not None:
        _check_shape(frame)
    return frame if frame is not None and frame.specials + frame.pair_specials > 0 else None


def _check_shape(frame: Frame):
    segments = [i for i, _ in frame.single if isinstance(i, str)]
    pair = [i for i, _ in frame.pair if isinstance(i, str)]
    if segments != [A] or pair != [A, B]:
        raise FrameError(f"its post-processor's frames hold segments {segments} and {pair}, not A and A B")
    if any(t for _, t in frame.single):
        raise FrameError("its single-segment frame has type ids other than 0")
    b = _index(frame.pair, B)
    if any(t for _, t in frame.pair[:b]) or len({t for _, t in frame.pair[b:]}) != 1:
        raise FrameError("its pair frame's type ids are not 0 up to B and one id from B on")


def check_by_encoding(frame: Frame, tokenizer) -> None:
    """The frame must be what the tokenizer itself adds to a dummy single and pair."""
    for items, texts in ((frame.single, ("a",)), (frame.pair, ("a", "b"))):
        framed = tokenizer.encode(*texts, add_special_tokens=True)
        bare = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        expected_ids, expected_types = [], []
        for item, type_id in items:
            part = [item] if not isinstance(item, str) else bare[0 if item == A else 1].ids
            expected_ids += part
            expected_types += [type_id] * len(part)
        if framed.ids != expected_ids or framed.type_ids != expected_types:
            raise FrameError(
                f"its post-processor's frame does not match what it encodes ({framed.tokens} for {texts})"
            )
