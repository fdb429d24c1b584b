"""A gymnasium harness for adaptation to new tasks: `FewShotQAEnv` and agents that play it.

Importing this package registers ``metarag/FewShotQA-v0``::

    import gymnasium
    import metarag.gym
    from metarag.gym.agents import CopySpanAgent, run_episodes

    env = gymnasium.make("metarag/FewShotQA-v0", shots=4, n_questions=8, passages="gold")
    print(run_episodes(env, CopySpanAgent(), 10, seed=0))  # mean reward (token F1) per step

Neither this package nor `metarag.gym.env` imports torch; the model agents in
`metarag.gym.agents` import it when built. See docs/GYM.md.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from metarag.gym.env import FewShotQAEnv

ENV_ID = "metarag/FewShotQA-v0"

if ENV_ID not in registry:  # a re-import (importlib.reload) must not register twice
    register(id=ENV_ID, entry_point="metarag.gym.env:FewShotQAEnv")

__all__ = ["ENV_ID", "FewShotQAEnv"]
