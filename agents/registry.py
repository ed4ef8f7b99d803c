"""The RL registries: ``ALGORITHMS`` (what a student is: PPO, DQN) and ``METHODS`` (how a group distils).

A new RL distillation method is ``agents/methods/<name>.py`` with a :class:`RLMethod` subclass and one
``METHODS.register(name, Entry())`` line, its module named in ``METHODS`` below, and its oracle test in
``tests/agents/test_rl_methods.py``. A new algorithm is ``agents/algorithms/<name>.py`` with an
:class:`Algorithm` adapter (build, iterate, outputs, decisions, act, state) registered in ``ALGORITHMS``, a
config section in ``agents/config.py`` and its test. ``workbench rl train``'s choices, ``rl compare``'s
default methods and the registry-wide tests loop over these registries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from workbench.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

METHODS: Registry[Any] = Registry(
    "RL distillation method",
    modules=[
        "agents.methods.independent",
        "agents.methods.opd_mean",
        "agents.methods.dml",
        "agents.methods.opd_da",
    ],
)
ALGORITHMS: Registry[Any] = Registry("RL algorithm", modules=["agents.algorithms.ppo", "agents.algorithms.dqn"])


class RLMethod:
    """How a group distils: student i's decision and feature terms on one minibatch.

    ``distils``: False for a method without any term (no distiller is built); ``attention``: the method
    needs the group's :class:`~workbench.distill.DecisionAttention` (built by the group, its own optimizer).
    """

    distils: ClassVar[bool] = True
    attention: ClassVar[bool] = False

    def terms(
        self, i: int, decisions: torch.Tensor, features: torch.Tensor, T: float, attention: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(L_dec,i, L_feat,i or None, α (B, M, M) or None)``; ``decisions`` ``(M, B, A)`` and ``features``
        ``(M, B, D)`` hold student i's own rows with gradient, peers' rows as constants."""
        raise NotImplementedError


class Algorithm:
    """A student algorithm behind the small interface the group uses.

    ``section``: its config section (``ppo.*``, ``dqn.*``); ``presets``: ``rl compare``'s default preset per
    env family (``atari``, ``minatar``, an env id, ``default``).
    """

    section: ClassVar[str]
    presets: ClassVar[dict[str, str]] = {}

    def build(self, cfg: Any, env: Any, seed: int, device: torch.device, policy: str, policy_kwargs: dict) -> Any:
        """One SB3 learner with the config's hyper-parameters."""
        raise NotImplementedError

    def validate(self, cfg: Any, spec: Any) -> None:
        """Refuse an impossible config with a one-line :class:`WorkbenchError`."""

    def setup(self, group: Any) -> None:
        """Once, after the students are built (e.g. batched inference)."""

    def iterate(self, group: Any) -> None:
        """One group iteration: every student collects experience, then updates."""
        raise NotImplementedError

    def outputs(self, student: Any, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw decision output, feature h)`` on a batch, with gradient."""
        raise NotImplementedError

    def decisions(self, raw: torch.Tensor, tau: float) -> torch.Tensor:
        """The decision ``z`` distilled from the raw output (logits as they are; DQN: Q/τ)."""
        return raw

    def learning_rate(self, cfg: Any) -> float:
        return float(getattr(cfg, self.section).learning_rate)

    def act(self, student: Any, obs: np.ndarray, deterministic: bool, epsilon: float, rng: np.random.Generator):
        """Evaluation actions for an observation batch."""
        raise NotImplementedError

    def probe_observations(self, student: Any, n: int) -> np.ndarray | None:
        """A batch of recent observations (diversity metric), or None when there are none yet."""
        raise NotImplementedError

    def state_dict(self, student: Any, cfg: Any) -> dict[str, Any]:
        """What a checkpoint keeps beyond the policy, optimizer and counters."""
        return {}

    def load_state_dict(self, student: Any, entry: dict[str, Any], group: Any) -> None:
        """Restore :meth:`state_dict`'s entries."""
