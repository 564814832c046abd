"""Built-in stages. Each module registers its stage with ``@stages.register``."""

from steer.stages import system_prompt

__all__ = ["system_prompt"]
