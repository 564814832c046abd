"""Built-in stages. Each module registers its stage with ``@stages.register``."""

from steer.stages import align, recall, remember, rerank, sample, system_prompt

__all__ = ["align", "recall", "remember", "rerank", "sample", "system_prompt"]
