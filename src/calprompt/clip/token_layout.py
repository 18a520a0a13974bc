"""Where a tokenizer puts the text in its row of ids, so that learnable context lands where the text starts.

CLIP's BPE tokenizer writes ``[SOS] text [EOT] 0 ...`` and BERT's ``[CLS] text [SEP] [PAD] ...``: one position comes
before the text. SigLIP's SentencePiece (T5-style) and SigLIP 2's Gemma tokenizers write ``text </s> <pad> ...``:
nothing comes before it, and the tower reads its feature at the last position. Prompt learners put their context
where the text starts (`text_start`) and the tokenizer's own tokens (end of text, padding) after the class name.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from calprompt._validation import fail

PROBE = "X"  # the placeholder text prompt learners tokenize; one word every vocabulary can spell


def text_start(tokenizer: Callable[..., Tensor]) -> int:
    """The number of positions the tokenizer puts before the text (1 for CLIP and BERT, 0 for SigLIP's), found
    by locating ``tokenizer.encode`` (ids without special tokens) in the row ``tokenizer([text])``."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        fail("tokenizer", "an object with encode(text) -> ids without special tokens", type(tokenizer).__name__)
    bare = list(encode(PROBE))
    row = tokenizer([PROBE])[0].tolist()
    for start in range(len(row) - len(bare) + 1):
        if row[start : start + len(bare)] == bare:
            return start
    fail("tokenizer", f"rows holding the ids of encode({PROBE!r}) = {bare}", row)
