"""A character-level tokenizer that needs no download.

Every printable ASCII character and the newline is one token, so any prompt can be encoded and the
vocabulary is tiny. It is wrapped as a `PreTrainedTokenizerFast` with a chat template, so TRL,
`apply_chat_template` and `transformers serve` treat it like any hub tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]

# User turns end with a newline; the assistant turn ends with EOS. The generation tags let TRL mask
# everything but assistant tokens (assistant_only_loss).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{%- else -%}{{ message['content'] }}{{ '\\n' }}{%- endif -%}"
    "{%- endfor -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK] + CHARS)}
    # BPE without merges is a character-level model that maps unknown characters to <unk>.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
