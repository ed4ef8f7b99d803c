"""The one module that touches stable-baselines3's private attributes (pinned: ``stable-baselines3>=2.9,<2.10``).

The group drives SB3 learners from outside their ``learn()`` loop, so it needs a few internals: the
learner's current observation and episode starts, its progress counter, its update counter, its learning-
rate update, ``_setup_learn`` and the hooks ``_update_info_buffer`` / ``RolloutBuffer._get_samples`` that
the students extend. Every such access is a function or class here; the rest of ``agents/`` calls these.
``tests/agents/test_sb3_compat.py`` checks every name and signature listed in :data:`PRIVATE_API` against
the installed SB3, so an upgrade that changes one fails there, loudly, instead of silently mis-training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

SB3_SERIES = "2.9"  # the minor series these internals were checked against (pyproject pins it)

# owner -> {private name: the parameter names of a method (after self), or None for a data attribute}
PRIVATE_API: dict[type, dict[str, tuple[str, ...] | None]] = {
    BaseAlgorithm: {
        "_setup_learn": ("total_timesteps", "callback", "reset_num_timesteps", "tb_log_name", "progress_bar"),
        "_update_learning_rate": ("optimizers",),
        "_update_current_progress_remaining": ("num_timesteps", "total_timesteps"),
        "_update_info_buffer": ("infos", "dones"),
    },
    RolloutBuffer: {"_get_samples": ("batch_inds", "env"), "swap_and_flatten": ("arr",)},
    OnPolicyAlgorithm: {},
    OffPolicyAlgorithm: {
        "_sample_action": ("learning_starts", "action_noise", "n_envs"),
        "_store_transition": ("replay_buffer", "buffer_action", "new_obs", "reward", "dones", "infos"),
        "_on_step": (),
    },
}
# data attributes every learner has after ``_setup_learn`` (checked on live PPO/DQN instances by the test)
LEARNER_ATTRIBUTES = (
    "_last_obs",
    "_last_episode_starts",
    "_total_timesteps",
    "_num_timesteps_at_start",
    "_current_progress_remaining",
    "_n_updates",
    "_episode_num",
    "_vec_normalize_env",
)
DQN_ATTRIBUTES = ("_n_calls",)


# -- driving a learner from outside learn() -------------------------------------------------------------
def setup_learn(model: BaseAlgorithm, total_steps: int):
    """SB3's ``_setup_learn`` (reset env, counters, callback) for ``total_steps``; returns the callback."""
    _, callback = model._setup_learn(total_steps, callback=None, reset_num_timesteps=True, progress_bar=False)
    model._total_timesteps = total_steps
    return callback


def last_obs(model: BaseAlgorithm) -> np.ndarray:
    """The observation the learner acts on next."""
    return model._last_obs  # type: ignore[return-value]


def last_episode_starts(model: BaseAlgorithm) -> np.ndarray:
    return model._last_episode_starts  # type: ignore[return-value]


def advance(model: BaseAlgorithm, new_obs: np.ndarray, dones: np.ndarray) -> None:
    """After an env step: the next observation and episode starts, as ``collect_rollouts`` sets them."""
    model._last_obs = new_obs
    model._last_episode_starts = dones


def record_infos(model: BaseAlgorithm, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
    """SB3's episode bookkeeping of one env step (``ep_info_buffer``, success buffer)."""
    model._update_info_buffer(infos, dones)


def update_progress(model: BaseAlgorithm) -> None:
    """Recompute ``progress_remaining`` (schedules) from ``num_timesteps``."""
    model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)


def progress_remaining(model: BaseAlgorithm) -> float:
    return float(model._current_progress_remaining)


def update_learning_rate(model: BaseAlgorithm) -> None:
    """Set the policy optimizer's rate from the learner's schedule, as SB3's ``train`` does first."""
    model._update_learning_rate(model.policy.optimizer)


def add_updates(model: BaseAlgorithm, n: int) -> None:
    model._n_updates += n


def vec_normalize_env(model: BaseAlgorithm):
    return model._vec_normalize_env


def sample_action(model: OffPolicyAlgorithm, learning_starts: int, n_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """SB3's exploration action of an off-policy learner (random before ``learning_starts``, then its
    ``predict``, ε-greedy for DQN): ``(env actions, buffer actions)``."""
    return model._sample_action(learning_starts, None, n_envs)


def record_off_policy_step(
    model: OffPolicyAlgorithm, replay_buffer, buffer_actions: np.ndarray, new_obs, rewards, dones, infos
) -> None:
    """What SB3's off-policy ``collect_rollouts`` does after ``env.step`` and the callback: episode
    bookkeeping, the replay transition (terminal observations, time-outs), progress, ``_on_step`` (DQN:
    target update and exploration rate) and the episode counter."""
    model._update_info_buffer(infos, dones)
    model._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)
    update_progress(model)
    model._on_step()
    model._episode_num += int(np.sum(dones))


def counters(model: BaseAlgorithm) -> dict[str, int]:
    """The counters a checkpoint keeps (with ``num_timesteps``)."""
    return {
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "episode_num": int(model._episode_num),
        "n_calls": int(getattr(model, "_n_calls", 0)),
    }


def load_counters(model: BaseAlgorithm, entry: dict[str, int]) -> None:
    """Restore :func:`counters` and the progress they imply."""
    model.num_timesteps = entry["num_timesteps"]
    model._num_timesteps_at_start = model.num_timesteps
    model._n_updates = entry["n_updates"]
    model._episode_num = entry["episode_num"]
    if hasattr(model, "_n_calls"):
        model._n_calls = entry["n_calls"]
    update_progress(model)


# -- the students' extensions of SB3 hooks ----------------------------------------------------------------
class EpisodeHook:
    """Mixin for an SB3 learner: ``on_episode(return, length)`` for each finished episode SB3 records
    (``info["episode"]``), by extending the private ``_update_info_buffer``."""

    def on_episode(self, ret: float, length: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)  # type: ignore[misc]
        for info in infos:
            ep = info.get("episode")
            if ep is not None:
                self.on_episode(float(ep["r"]), int(ep["l"]))


class IndexedRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer that records each minibatch's indices (``batch_inds``) and can flatten once."""

    batch_inds: np.ndarray | None = None

    def flatten(self) -> None:
        """Flatten ``(n_steps, n_envs, ...)`` to ``(n_steps·n_envs, ...)`` once (what ``get`` does first)."""
        if self.generator_ready:
            return
        for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
        self.generator_ready = True

    def _get_samples(self, batch_inds: np.ndarray, env=None):
        self.batch_inds = batch_inds
        return super()._get_samples(batch_inds, env)
