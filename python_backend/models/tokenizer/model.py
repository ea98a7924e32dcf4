"""Triton model `tokenizer`: TEXT (BYTES [batch, 1]) -> INPUT_IDS, ATTENTION_MASK (INT64 [batch, pad_to])."""

from tokenizers import Tokenizer

from python_backend.text import decode_rows, encode
from python_backend.triton_glue import ModelConfig, execute_batched


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        self.tokenizer = Tokenizer.from_file(f"{self.config.version_dir}/tokenizer.json")
        self.max_bytes = int(self.config.parameter("max_text_bytes"))

    def execute(self, requests):
        return execute_batched(
            requests,
            self.config,
            parse=lambda text: [decode_rows(text, self.max_bytes)],
            compute=lambda rows: encode(self.tokenizer, rows),
        )
