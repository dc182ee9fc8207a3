"""WSRL's update schedule, one definition for both processes.

No update during the first ``warmup_steps`` env steps (counted over all actors); after that,
every env step is owed one update of ``utd`` critic steps. The learner pays what it owes; a
simulated actor that would outrun the learner waits while the debt is too large.
"""

from __future__ import annotations


def owed_updates(env_steps: int, grad_steps: int, warmup_steps: int, utd: int) -> int:
    """Updates (calls of ``utd`` critic steps) the learner is behind its schedule; 0 in warmup."""
    if env_steps < warmup_steps or env_steps == 0:
        return 0
    return env_steps - warmup_steps - grad_steps // max(utd, 1)
