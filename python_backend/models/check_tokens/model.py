"""Triton model `check_tokens`: the first step of `feedback`, so a bad request fails before the fan-out.

Triton 2.51's ensemble scheduler leaks an in-flight count whenever a step that runs in parallel with another fails
(fixed upstream in core PR #483): shutdown then hangs for its whole exit timeout and stubs die uncleanly. Checking
client tensors here, in a step with no siblings, keeps member failures for genuine faults only.
"""

from python_backend.triton_glue import ModelConfig, execute_batched
from python_backend.validation import token_parser


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        self.parse = token_parser(self.config.parameters)

    def execute(self, requests):
        return execute_batched(requests, self.config, self.parse, compute=lambda ids, mask: (ids, mask))
