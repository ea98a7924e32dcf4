"""WordPiece tokenizer trained on the shipped corpus, saved as one tokenizer.json that the server loads."""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"


def train(texts: list[str], pad_to: int, vocab_size: int = 2000) -> Tokenizer:
    """Train WordPiece on `texts`; every encoding starts with [CLS] and is padded/truncated to `pad_to` tokens.

    A fixed length gives every request the same shape, so Triton's dynamic batcher can merge them.
    """
    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, CLS])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, tok.token_to_id(CLS))])
    tok.enable_truncation(max_length=pad_to)
    tok.enable_padding(length=pad_to, pad_id=tok.token_to_id(PAD), pad_token=PAD)
    return tok
