"""Model-free streaming quantization of full-size checkpoints (``dsq quantize-checkpoint``, ``dsq verify``).

A checkpoint is converted shard by shard, straight from its safetensors files (BF16/FP16 or DeepSeek's
native FP8), with peak memory near twice the largest source shard whatever the model size; output shards,
index, config and manifest are written crash-safely and a rerun resumes. See :mod:`dsq.streaming.runner`
for the flow, :mod:`dsq.streaming.plan` for what happens to each tensor and
:mod:`dsq.streaming.synthetic` for the DeepSeek-V3-shaped test and benchmark checkpoints.
"""

from .runner import quantize_checkpoint
from .synthetic import write_synthetic
from .verify import verify_checkpoint

__all__ = ["quantize_checkpoint", "verify_checkpoint", "write_synthetic"]
