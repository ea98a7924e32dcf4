"""Triton model `fuse`: one `<member>_probs` input per member, `input_errors` and the optional `windows` -> PROBS,
LABEL, MEMBER_PROBS, WINDOWS (one row per comment)."""

import triton_python_backend_utils as pb_utils

from python_backend.fuse import Fuse
from python_backend.triton_glue import ModelConfig, execute_batched


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        try:
            self.fuse = Fuse(self.config.inputs, self.config.parameters, self.config.version_dir)
        except (ValueError, OSError, KeyError) as error:
            raise pb_utils.TritonModelException(f"{self.config.name}: {error}") from error

    def execute(self, requests):
        return execute_batched(
            requests,
            self.config,
            parse=lambda *arrays: self.fuse.stacked(dict(zip(self.config.inputs, arrays, strict=True))),
            compute=self.fuse.outputs,
        )
