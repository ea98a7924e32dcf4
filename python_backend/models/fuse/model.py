"""Triton model `fuse`: one `<member>_probs` input per member -> PROBS, LABEL, MEMBER_PROBS."""

import triton_python_backend_utils as pb_utils

from python_backend.fuse import labels, make_combiner, stack_members
from python_backend.triton_glue import ModelConfig, execute_batched


class TritonPythonModel:
    def initialize(self, args):
        self.config = ModelConfig(args)
        self.class_names = self.config.parameter("class_names").split(",")
        members = [name.removesuffix("_probs") for name in self.config.inputs]
        try:
            self.combine = make_combiner(members, self.config.parameters, self.config.version_dir)
        except (ValueError, OSError, KeyError) as error:
            raise pb_utils.TritonModelException(f"{self.config.name}: {error}") from error

    def execute(self, requests):
        def compute(stacked):
            probs = self.combine(stacked)
            return probs, labels(probs, self.class_names), stacked

        return execute_batched(
            requests,
            self.config,
            parse=lambda *member_probs: [stack_members(list(member_probs), len(self.class_names))],
            compute=compute,
        )
