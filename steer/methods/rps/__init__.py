"""Reward-guided preference sampling (RPS): the direction geometry and the ``sample`` stage."""
