"""Built-in stages. Each module registers its stage with ``@stages.register``."""

from steer.stages import recall, remember, system_prompt

__all__ = ["recall", "remember", "system_prompt"]
