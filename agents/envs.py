"""Environment factory for the students: Atari (two backends) and classic control, behind SB3's ``VecEnv``.

Atari ids: ``ALE/<Game>-v5`` and ``<Game>NoFrameskip-v4``. Both backends give the same observations
(``uint8`` stacks of shape ``(4, 84, 84)``, channel first) and the same training-episode semantics
(Mnih et al. 2015 / SB3 ``AtariWrapper``):

- frame skip 4 with a max over the last two frames, applied exactly once (a ``-v5`` id is made with
  ``frameskip=1`` underneath so skipping is never stacked);
- up to 30 random no-ops at reset; FIRE on reset for games that need it;
- a life loss ends the *training* episode (``done=True`` for the learner) but not the game;
- rewards clipped to their sign for learning; the logged ``episode`` return is the unclipped full-game return;
- sticky actions: probability ``sticky_actions`` (default: the id's own, 0.25 for ``-v5``, 0 for ``-v4``).

Backends: ``ale`` (default) wraps ale-py's native ``AtariVectorEnv`` (preprocessing in C++ threads) in
:class:`AleVecEnv`; ``sb3`` is SB3's ``make_atari_env`` + ``VecFrameStack`` + ``VecTransposeImage`` (reference).
Evaluation envs (``evaluation=True``) keep full games (no life-loss episodes) and unclipped rewards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError, suggest

CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3", "Pendulum-v1")
_ATARI_RE = re.compile(r"^(?:ALE/(?P<v5>[A-Za-z0-9]+)-v5|(?P<v4>[A-Za-z0-9]+)NoFrameskip-v4)$")
_MINATAR_RE = re.compile(r"^MinAtar/(?P<game>[A-Za-z0-9]+)-(?P<version>v[01])$")
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
MINATAR_MISSING = (
    "MinAtar ids need the optional `minatar` package (GPL-3.0): pip install -e '.[minatar]' "
    "(or pip install minatar==1.0.15)"
)
BACKENDS = ("ale", "sb3")


@dataclass(frozen=True)
class EnvSpec:
    """What the factory needs to know about an env id."""

    env_id: str
    atari: bool
    game: str = ""  # CamelCase game name, e.g. "Breakout"
    default_sticky: float = 0.0
    minatar: bool = False  # a MinAtar game (10x10xC boolean states, presented channel-first uint8)

    @property
    def rom(self) -> str:
        """ale-py ROM name in snake case: ``MsPacman`` -> ``ms_pacman``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.game).lower()


def _register_ale() -> None:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)


def register_minatar() -> None:
    """Register ``MinAtar/<Game>-v0|v1`` with Gymnasium (minatar 1.0.15 does not do it on import with
    Gymnasium 1.x); a missing package is the one-line :data:`MINATAR_MISSING` error."""
    import importlib.util

    import gymnasium as gym

    if "MinAtar/Breakout-v1" in gym.registry:
        return
    if importlib.util.find_spec("minatar") is None:
        raise WorkbenchError(MINATAR_MISSING)
    from minatar.gym import register_envs

    register_envs()


def parse_env_id(env_id: str) -> EnvSpec:
    """Check an env id and describe it; an unknown id raises a one-line :class:`WorkbenchError`."""
    import gymnasium as gym

    if env_id.startswith("MinAtar/"):
        m = _MINATAR_RE.match(env_id)
        if m is None:
            raise WorkbenchError(
                f"unknown MinAtar id '{env_id}'; use MinAtar/<Game>-v1 (minimal action set) or -v0 (all 6 actions)"
            )
        game = m.group("game")
        if game not in MINATAR_GAMES:
            raise WorkbenchError(
                f"unknown MinAtar game '{game}'{suggest(game, MINATAR_GAMES)}; use MinAtar/<Game>-v1 with one of "
                f"{', '.join(MINATAR_GAMES)}"
            )
        register_minatar()
        return EnvSpec(env_id, False, game, 0.0, minatar=True)

    m = _ATARI_RE.match(env_id)
    if m:
        _register_ale()
        from ale_py import roms

        game = m.group("v5") or m.group("v4")
        spec = EnvSpec(env_id, True, game, 0.25 if m.group("v5") else 0.0)
        if env_id not in gym.registry or roms.get_rom_path(spec.rom) is None:
            games = sorted({k[4:-3] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5")})
            raise WorkbenchError(
                f"unknown Atari game '{game}'{suggest(game, games)}; use ALE/<Game>-v5 or <Game>NoFrameskip-v4 "
                f"with a game of ale-py (e.g. {', '.join(games[:5])}, ...)"
            )
        return spec
    if env_id in gym.registry and not env_id.startswith("ALE/") and "NoFrameskip" not in env_id:
        entry = str(gym.registry[env_id].entry_point)
        if "ale_py" in entry:
            raise WorkbenchError(
                f"env id '{env_id}' skips frames or uses the old API; use ALE/<Game>-v5 or <Game>NoFrameskip-v4"
            )
        return EnvSpec(env_id, False)
    if env_id.startswith("ALE/") or "Frameskip" in env_id or env_id.endswith("-v4"):
        raise WorkbenchError(f"unknown env id '{env_id}'; Atari ids are ALE/<Game>-v5 or <Game>NoFrameskip-v4")
    valid = [k for k in gym.registry if "ALE" not in k and "NoFrameskip" not in k and "Deterministic" not in k]
    raise WorkbenchError(
        f"unknown env id '{env_id}'{suggest(env_id, valid)}; use ALE/<Game>-v5, <Game>NoFrameskip-v4 or a "
        f"Gymnasium id such as {', '.join(CLASSIC_CONTROL[:2])}"
    )


def env_family(env_id: str) -> str:
    """``atari`` (ALE ids), ``minatar`` (MinAtar ids) or ``gym`` (anything else), from the id alone."""
    if _ATARI_RE.match(env_id) or env_id.startswith("ALE/"):
        return "atari"
    if env_id.startswith("MinAtar/"):
        return "minatar"
    return "gym"


def observation_bytes(spec: EnvSpec, frame_stack: int = 4) -> int:
    """Bytes of one stored observation (for the replay-buffer memory check)."""
    if spec.atari:
        return frame_stack * 84 * 84
    import gymnasium as gym

    if spec.minatar:
        register_minatar()

    space = gym.spec(spec.env_id).make().observation_space
    return int(np.prod(space.shape)) * space.dtype.itemsize


def sticky_probability(spec: EnvSpec, sticky_actions: float) -> float:
    return spec.default_sticky if sticky_actions < 0 else float(sticky_actions)


def make_env(
    spec: EnvSpec,
    n_envs: int,
    seed: int,
    backend: str = "ale",
    evaluation: bool = False,
    sticky_actions: float = -1.0,
    frame_stack: int = 4,
    num_threads: int = 0,
    render: bool = False,
):
    """A ``VecEnv`` of ``n_envs`` copies; Atari envs give ``uint8`` ``(frame_stack, 84, 84)`` observations.

    ``render`` makes classic-control envs render RGB frames (``get_images``), for GIFs; Atari GIFs use the
    observations themselves.
    """
    if spec.minatar:
        from stable_baselines3.common.env_util import make_vec_env

        register_minatar()
        return make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, wrapper_class=MinAtarObservation)
    if not spec.atari:
        from stable_baselines3.common.env_util import make_vec_env

        env_kwargs = {"render_mode": "rgb_array"} if render else None
        return make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    sticky = sticky_probability(spec, sticky_actions)
    if backend == "ale":
        return AleVecEnv(spec, n_envs, seed, evaluation, sticky, frame_stack, num_threads)
    if backend == "sb3":
        return _sb3_atari(spec, n_envs, seed, evaluation, sticky, frame_stack)
    raise WorkbenchError(f"unknown env_backend '{backend}'; valid: {', '.join(BACKENDS)}")


def _minatar_observation_wrapper():
    import gymnasium as gym

    class MinAtarObservation(gym.ObservationWrapper):
        """MinAtar's ``(10, 10, C)`` boolean state as a channel-first ``uint8`` ``(C, 10, 10)`` array of 0/1
        (channel c is MinAtar's channel c; no float copy, so replay and rollout buffers keep one byte each)."""

        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            h, w, c = env.observation_space.shape
            self.observation_space = gym.spaces.Box(0, 1, (c, h, w), dtype=np.uint8)

        def observation(self, observation: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.uint8)

    return MinAtarObservation


MinAtarObservation = _minatar_observation_wrapper()


def _sb3_atari(spec: EnvSpec, n_envs: int, seed: int, evaluation: bool, sticky: float, frame_stack: int):
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    _register_ale()
    # the wrapper does the frame skipping and the stickiness, so the -v5 id must do neither
    env_kwargs: dict[str, Any] = {"repeat_action_probability": 0.0}
    if spec.env_id.startswith("ALE/"):
        env_kwargs["frameskip"] = 1
    wrapper_kwargs = {"action_repeat_probability": sticky}
    if evaluation:
        wrapper_kwargs.update(terminal_on_life_loss=False, clip_reward=False)
    env = make_atari_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, wrapper_kwargs=wrapper_kwargs)
    return VecTransposeImage(VecFrameStack(env, n_stack=frame_stack))


def _vec_env_base():
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    return VecEnv


class AleVecEnv(_vec_env_base()):  # type: ignore[misc]
    """ale-py's native ``AtariVectorEnv`` behind SB3's ``VecEnv`` interface.

    The native env runs with same-step autoreset, life-loss termination signals (training) and unclipped
    rewards; this adapter clips rewards to their sign for training, tracks the unclipped full-game return and
    length, and reports them as SB3's ``info["episode"]`` when a game ends. ``info["terminal_observation"]``
    holds the last observation of every finished (life or game) episode, as SB3 expects.
    """

    def __init__(
        self,
        spec: EnvSpec,
        n_envs: int,
        seed: int,
        evaluation: bool = False,
        sticky: float = 0.0,
        frame_stack: int = 4,
        num_threads: int = 0,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv
        from gymnasium.vector import AutoresetMode

        self._env = AtariVectorEnv(
            spec.rom,
            n_envs,
            num_threads=num_threads,
            repeat_action_probability=sticky,
            autoreset_mode=AutoresetMode.SAME_STEP,
            stack_num=frame_stack,
            frameskip=4,
            noop_max=30,
            episodic_life=False,
            life_loss_info=not evaluation,
            reward_clipping=False,
            use_fire_reset=True,
        )
        super().__init__(n_envs, self._env.single_observation_space, self._env.single_action_space)
        self.evaluation = evaluation
        self._returns = np.zeros(n_envs, dtype=np.float64)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self.seed(seed)

    def reset(self) -> np.ndarray:
        seeds = self._seeds
        seed = None if any(s is None for s in seeds) else np.asarray(seeds, dtype=np.int64)
        obs, info = self._env.reset(seed=seed)
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._lives[:] = info["lives"]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        # the native env steps in its own threads from here until step_wait
        self._env.send(np.asarray(actions, dtype=np.int64).reshape(self.num_envs))

    def step_wait(self):
        obs, reward, terminated, truncated, info = self._env.recv()
        reward = reward.astype(np.float64)
        self._returns += reward
        self._lengths += 1
        lives = info["lives"].astype(np.int64)
        done = terminated | truncated
        # a game ends on truncation, or on a termination that is not a life loss (lives did not drop)
        game_over = truncated | (terminated & (lives >= self._lives))
        self._lives = lives
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = info.get("final_obs")
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final[i] if final is not None else obs[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if game_over[i]:
                    infos[i]["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]), "t": 0.0}
                    self._returns[i] = 0.0
                    self._lengths[i] = 0
        rew = reward if self.evaluation else np.sign(reward)
        return obs, rew.astype(np.float32), done, infos

    def close(self) -> None:
        self._env.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(self._indices(indices))
        raise AttributeError(f"AleVecEnv has no sub-env attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"AleVecEnv cannot set {attr_name!r}")

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise AttributeError(f"AleVecEnv has no sub-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
