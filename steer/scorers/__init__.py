"""Built-in scorers. Each module registers itself with ``@scorers.register``."""

from steer.scorers import features, judge, reward_model

__all__ = ["features", "judge", "reward_model"]
