"""SB3 PPO and DQN students whose updates add the group's distillation loss.

``GroupPPO.train`` is PPO's clipped-surrogate update (Schulman et al., arXiv 1707.06347) written out so that
each minibatch's loss can take the distillation term ``λ_d·w·L_dec + λ_f·L_feat`` from the group's
:class:`~agents.distillation.Distiller` (OPD-DA, arXiv 2406.05488); ``GroupDQN.train`` does the same for
DQN's Huber TD loss. Without a distiller they are plain PPO/DQN. One forward pass gives everything the
losses need: value, log-probability, entropy, the decision ``z`` (action logits; Q-values for DQN) and the
feature ``h`` (the input of the last linear layer: NatureCNN's 512-d output for CNN policies).

``Uint8RolloutBuffer`` keeps image observations as ``uint8`` (SB3's buffer stores float32), a quarter of the
memory and of the copying per minibatch; the policies scale them by 1/255 as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.utils import explained_variance

from agents import sb3_compat as compat
from agents.sb3_compat import EpisodeHook, IndexedRolloutBuffer


class Uint8RolloutBuffer(IndexedRolloutBuffer):
    """SB3's rollout buffer with ``uint8`` image observations; records each minibatch's indices."""

    def reset(self) -> None:
        super().reset()
        space = self.observation_space
        if isinstance(space, spaces.Box) and space.dtype == np.uint8:
            self.observations = np.zeros((self.buffer_size, self.n_envs, *self.obs_shape), dtype=np.uint8)


def ppo_outputs(policy, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits z, feature h, value)`` of an SB3 ``ActorCriticPolicy`` in one forward pass."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    return policy.action_net(latent_pi), latent_pi, policy.value_net(latent_vf)


def dqn_outputs(policy, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q-values, feature h)`` of an SB3 ``DQNPolicy``'s online network; ``h`` feeds the last linear layer."""
    q_net = policy.q_net
    features = q_net.extract_features(obs, q_net.features_extractor)
    head = q_net.q_net
    h = head[:-1](features) if len(head) > 1 else features
    return head[-1](h), h


class _EpisodeLog(EpisodeHook):
    """What GroupPPO and GroupDQN share: the episodes SB3 sees (``info["episode"]``: unclipped full-game
    return) since the last read, per-update statistics, and the gradient step with the distiller."""

    new_episodes: list[tuple[float, int]]
    stats: dict[str, list[float]]
    distiller: Any

    def on_episode(self, ret: float, length: int) -> None:
        self.new_episodes.append((ret, length))

    def pop_episodes(self) -> list[tuple[float, int]]:
        eps, self.new_episodes = self.new_episodes, []
        return eps

    def _record(self, **values: float) -> None:
        for k, v in values.items():
            self.stats.setdefault(k, []).append(float(v))

    def _gradient_step(self, loss: torch.Tensor) -> None:
        """One clipped optimizer step of the policy, and of the distiller's attention maps when set."""
        distiller = self.distiller
        self.policy.optimizer.zero_grad()
        if distiller is not None:
            distiller.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        if distiller is not None:
            distiller.step()


GSDE_ERROR = "GroupPPO does not support gSDE (use_sde=True): its update does not resample the noise; set use_sde=False"


class GroupPPO(_EpisodeLog, PPO):
    """PPO whose minibatch loss adds ``distiller.loss(index, z, h, batch_inds)`` when a distiller is set.

    Like SB3's ``PPO.train``: an epoch stops before the optimizer step of the first minibatch whose
    approximate KL exceeds ``1.5·target_kl``, and no later epoch runs. gSDE is refused.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("use_sde"):
            raise ValueError(GSDE_ERROR)
        self.new_episodes = []
        self.distiller = None
        self.index = 0
        self.stats: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)

    def train(self) -> None:
        if self.use_sde:
            raise ValueError(GSDE_ERROR)
        self.policy.set_training_mode(True)
        compat.update_learning_rate(self)
        progress = compat.progress_remaining(self)
        clip_range = self.clip_range(progress)
        clip_vf = self.clip_range_vf(progress) if self.clip_range_vf is not None else None
        continue_training = True
        buffer = self.rollout_buffer
        discrete = isinstance(self.action_space, spaces.Discrete)
        distiller = self.distiller
        if distiller is not None:
            buffer.flatten()
            distiller.prepare(self.index, buffer.observations)
        for _ in range(self.n_epochs):
            for data in buffer.get(self.batch_size):
                actions = data.actions.long().flatten() if discrete else data.actions
                logits, h, values = ppo_outputs(self.policy, data.observations)
                dist = self.policy.action_dist.proba_distribution(action_logits=logits)
                log_prob, entropy = dist.log_prob(actions), dist.entropy()
                values = values.flatten()
                adv = data.advantages
                if self.normalize_advantage and len(adv) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = torch.exp(log_prob - data.old_log_prob)
                pg_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()
                if clip_vf is not None:
                    values = data.old_values + torch.clamp(values - data.old_values, -clip_vf, clip_vf)
                value_loss = F.mse_loss(data.returns, values)
                entropy_loss = -torch.mean(entropy)
                loss = pg_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                with torch.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                    clip_frac = torch.mean((torch.abs(ratio - 1) > clip_range).float()).item()
                self._record(
                    pg_loss=pg_loss.item(),
                    value_loss=value_loss.item(),
                    entropy_loss=entropy_loss.item(),
                    approx_kl=approx_kl,
                    clip_fraction=clip_frac,
                )
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                if distiller is not None:
                    extra, terms = distiller.loss(self.index, logits, h, buffer.batch_inds)
                    loss = loss + extra
                    self._record(**terms)
                self._gradient_step(loss)
            compat.add_updates(self, 1)
            if not continue_training:
                break
        if distiller is not None:
            distiller.release(self.index)
        ev = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        self._record(explained_variance=float(ev), clip_range=float(clip_range), kl_stop=float(not continue_training))


class GroupDQN(_EpisodeLog, DQN):
    """DQN whose Huber TD loss adds the distillation term on each replay minibatch (peers forward there)."""

    def __init__(self, *args, **kwargs) -> None:
        self.new_episodes = []
        self.distiller = None
        self.index = 0
        self.stats = {}
        self.train_enabled: Callable[[], bool] | None = None
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        compat.update_learning_rate(self)
        distiller = self.distiller
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=compat.vec_normalize_env(self))
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():
                next_q = self.q_net_target(data.next_observations).max(dim=1).values.reshape(-1, 1)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q
            q, h = dqn_outputs(self.policy, data.observations)
            current_q = torch.gather(q, dim=1, index=data.actions.long())
            loss = F.smooth_l1_loss(current_q, target_q)
            self._record(td_loss=loss.item())
            if distiller is not None:
                extra, terms = distiller.loss(self.index, q, h, None, obs=data.observations)
                loss = loss + extra
                self._record(**terms)
            self._gradient_step(loss)
        compat.add_updates(self, gradient_steps)
        self._record(exploration_rate=self.exploration_rate)
