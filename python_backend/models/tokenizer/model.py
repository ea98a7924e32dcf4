"""Triton model `tokenizer`: TEXT (BYTES [batch, 1]) -> INPUT_IDS, ATTENTION_MASK (INT64 [windows, longest]) and
WINDOWS (INT32 [windows, 1]): each comment at its true length, a long one as several windows (python_backend/text.py).
The optional TENANT (`feedback_tenant`) comes back as ROW_TENANTS, one per window, for the fuse step's tenant heads.
"""

import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from python_backend.text import Windows, decode_rows, encode_windows, rows_of
from python_backend.triton_glue import ModelConfig, execute_each


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        self.tokenizer = Tokenizer.from_file(f"{self.config.version_dir}/tokenizer.json")
        self.max_bytes = int(self.config.parameter("max_text_bytes"))
        try:
            self.windows = Windows.from_parameters(self.config.parameters)
        except (KeyError, ValueError) as error:
            raise pb_utils.TritonModelException(f"{self.config.name}: config.pbtxt parameter {error}") from error

    def execute(self, requests):
        return execute_each(requests, self.config, self.tokenize)

    def tokenize(self, text, tenant=None):
        encoded = encode_windows(self.tokenizer, decode_rows(text, self.max_bytes), self.windows)
        return encoded if tenant is None else [*encoded, rows_of(tenant, encoded[2])]
