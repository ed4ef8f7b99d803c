"""Typed configs of the ``workbench rl`` commands (train, eval, compare); light imports only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agents.registry import ALGORITHMS, METHODS
from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError
from workbench.sweep.keys import SweepKeys

ALGOS = ALGORITHMS.names()
SCHEDULES = ("constant", "linear")
INFERENCE = ("auto", "loop", "vmap")


@dataclass
class PPOConfig:
    """SB3 PPO hyper-parameters (defaults: RL Zoo's Atari settings)."""

    n_steps: int = opt(128, "rollout length per env", ge=1)
    batch_size: int = opt(256, "minibatch size")
    n_epochs: int = opt(4, "epochs over each rollout", ge=1)
    learning_rate: float = opt(2.5e-4, "Adam learning rate", gt=0)
    lr_schedule: str = opt("linear", "learning-rate schedule over training", SCHEDULES)
    clip_range: float = opt(0.1, "PPO clip range", gt=0)
    clip_schedule: str = opt("linear", "clip-range schedule over training", SCHEDULES)
    schedule_steps: int = opt(
        0, "env steps over which linear schedules reach 0 (0 = total_steps; RL Zoo budget for a truncated run)", ge=0
    )
    gamma: float = opt(0.99, "discount", gt=0, le=1)
    gae_lambda: float = opt(0.95, "GAE lambda", ge=0, le=1)
    ent_coef: float = opt(0.01, "entropy coefficient", ge=0)
    vf_coef: float = opt(0.5, "value-loss coefficient", ge=0)
    max_grad_norm: float = opt(0.5, "gradient-norm clip", gt=0)
    target_kl: float = opt(0.0, "stop an update's epochs once approx. KL > 1.5 x target_kl, as SB3 (0: off)", ge=0)
    net_arch: list[int] = opt([], "hidden layers after the feature extractor ([]: SB3's default for the policy)", ge=1)


@dataclass
class DQNConfig:
    """SB3 DQN hyper-parameters (defaults: RL Zoo's Atari settings, memory-optimised buffer)."""

    buffer_size: int = opt(100_000, "replay capacity in transitions, per student", ge=1)
    optimize_memory_usage: bool = opt(True, "store each frame stack once (next_obs shares the array): half the memory")
    learning_starts: int = opt(100_000, "steps of random play before learning", ge=0)
    batch_size: int = opt(32, "replay minibatch size", ge=1)
    learning_rate: float = opt(1e-4, "Adam learning rate", gt=0)
    gamma: float = opt(0.99, "discount", gt=0, le=1)
    train_freq: int = opt(4, "env steps (per env) between updates", ge=1)
    gradient_steps: int = opt(1, "updates per train_freq")
    target_update_interval: int = opt(1000, "env steps between target-network copies", ge=1)
    exploration_fraction: float = opt(0.1, "fraction of training over which epsilon decays", ge=0, le=1)
    exploration_final_eps: float = opt(0.01, "final epsilon", ge=0, le=1)
    max_grad_norm: float = opt(10.0, "gradient-norm clip", gt=0)
    net_arch: list[int] = opt([], "hidden layers of the Q head ([]: SB3's default for the policy)", ge=1)


@dataclass
class TrainConfig(CommonConfig):
    """``workbench rl train``: a group of SB3 students learning one game with online distillation."""

    env: str = opt("CartPole-v1", "Gymnasium id: ALE/<Game>-v5, <Game>NoFrameskip-v4, CartPole-v1, Acrobot-v1, ...")
    algo: str = opt("ppo", "RL algorithm of every student", ALGOS)
    method: str = opt(
        "opd-da", "independent (no distillation), opd-mean, dml, opd-da (decision attention)", METHODS.names()
    )
    students: int = opt(3, "group size M")
    total_steps: int = opt(100_000, "env steps per student", ge=1)
    n_envs: int = opt(8, "envs per student", ge=1)
    env_backend: str = opt("ale", "Atari backend: ale (native AtariVectorEnv) or sb3 (make_atari_env)", ("ale", "sb3"))
    env_threads: int = opt(0, "threads of the native Atari env (0: ale-py's choice)", ge=0)
    sticky_actions: float = opt(-1.0, "sticky-action probability; -1: the id's default (0.25 for -v5, 0 for -v4)")
    frame_stack: int = opt(4, "stacked frames of Atari observations", ge=1)
    channels_last: bool = opt(True, "CNN policies: channels-last conv weights (PPO updates ~1.4x faster on CPU)")
    inference: str = opt(
        "auto", "PPO rollout forward: one vmapped call for all students or a loop (auto: vmap on cuda)", INFERENCE
    )
    lambda_dec: float = opt(1.0, "weight of the decision-distillation loss", ge=0)
    lambda_feat: float = opt(0.1, "weight of the feature-distillation loss (opd-da)", ge=0)
    temperature: float = opt(3.0, "distillation temperature T (opd-mean, opd-da; dml uses T=1)", gt=0)
    dqn_tau: float = opt(1.0, "DQN decisions are softmax(Q / tau)", gt=0)
    ramp_steps: int = opt(0, "steps of the exp(-5(1-t)^2) ramp-up of the decision loss (0: none)", ge=0)
    attention_source: str = opt("features", "what the decision-attention maps act on", ("features", "decisions"))
    attention_lr: float = opt(0.0, "Adam learning rate of W_q, W_k (0: the students' learning rate)", ge=0)
    attention_scaled: bool = opt(False, "divide attention scores by sqrt(P)")
    attention_self: bool = opt(
        True, "decision-attention over all students incl. itself (paper); false: over the peers only (variant)"
    )
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    eval_every: int = opt(0, "evaluate every N steps per student (0: only at the end)", ge=0)
    eval_episodes: int = opt(5, "evaluation episodes per student (0: no evaluation)", ge=0)
    eval_envs: int = opt(4, "parallel envs of each student's evaluation", ge=1)
    eval_deterministic: bool = opt(False, "PPO: greedy actions in evaluation (default: sample)")
    eval_epsilon: float = opt(0.001, "DQN: epsilon of evaluation", ge=0, le=1)
    eval_max_steps: int = opt(27_000, "cap on the steps of one evaluation episode", ge=1)
    log_every: int = opt(1000, "log training curves every N steps per student (PPO: at least every rollout)", ge=1)
    checkpoint_every: int = opt(50_000, "checkpoint every N steps per student (0: only at the end / on Ctrl-C)", ge=0)
    save_replay: bool = opt(False, "DQN: put the replay buffers in the checkpoint (large)")
    threads: int = opt(0, "torch CPU threads (0: 1 for MLP policies, torch's default for Atari CNNs)", ge=0)
    progress: bool = opt(True, "progress bar")

    def validate(self) -> None:
        from agents.envs import parse_env_id

        spec = parse_env_id(self.env)
        if self.students < 1:  # not a declared bound: the message names the group, as users read it
            raise WorkbenchError(f"students must be >= 1, got {self.students}")
        if METHODS[self.method].distils and self.students < 2:
            raise WorkbenchError(f"method={self.method} distils between students: set students >= 2")
        ALGORITHMS[self.algo].validate(self, spec)


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``), or total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def replay_bytes(cfg: TrainConfig, obs_bytes: int) -> int:
    """Observation bytes of all students' replay buffers: ``M × capacity × obs × (1 or 2)``.

    SB3 stores ``observations`` and, unless ``optimize_memory_usage``, a second ``next_observations``
    array of the same size; rewards/actions/dones are negligible next to 28,224-byte Atari stacks.
    """
    copies = 1 if cfg.dqn.optimize_memory_usage else 2
    return cfg.students * cfg.dqn.buffer_size * obs_bytes * copies


def check_replay_memory(cfg: TrainConfig, obs_bytes: int) -> None:
    need = replay_bytes(cfg, obs_bytes)
    have = available_memory()
    if need > 0.9 * have:
        gib = 1024**3
        raise WorkbenchError(
            f"the DQN replay buffers need {need / gib:.1f} GiB ({cfg.students} students x {cfg.dqn.buffer_size} "
            f"transitions x {obs_bytes} B{'' if cfg.dqn.optimize_memory_usage else ' x 2'}) but only "
            f"{have / gib:.1f} GiB is available; lower dqn.buffer_size or set dqn.optimize_memory_usage=true"
        )


@dataclass
class EvalConfig(CommonConfig):
    """``workbench rl eval run_dir=RUN_DIR``: evaluate every student of a (finished or interrupted) run."""

    run_dir: str = opt("", "the run directory of a `workbench rl train` run")
    episodes: int = opt(10, "episodes per student", ge=1)
    eval_envs: int = opt(4, "parallel envs per student", ge=1)
    deterministic: bool = opt(False, "PPO: greedy actions (default: sample)")
    epsilon: float = opt(0.001, "DQN: evaluation epsilon", ge=0, le=1)
    max_steps: int = opt(27_000, "cap on the steps of one episode", ge=1)
    gif: bool = opt(False, "save a short GIF of the best student into the run's plots/")
    gif_steps: int = opt(400, "frames in the GIF", ge=1)

    def validate(self) -> None:
        if not self.run_dir:
            raise WorkbenchError("give the run to evaluate: workbench rl eval run_dir=RUN_DIR (or RUN_DIR)")


@dataclass
class CompareConfig(SweepKeys, CommonConfig):
    """``workbench rl compare``: games × methods × seeds of one train config through the core sweep, then the
    tables."""

    env: str = opt("CartPole-v1", "env id of every run")
    algo: str = opt("ppo", "RL algorithm", ALGOS)
    methods: list[str] = opt(list(METHODS.names()), "methods to compare", METHODS.names())
    seeds: list[int] = opt([0, 1, 2], "master seeds")
    students: int = opt(3, "group size", ge=1)
    total_steps: int = opt(15_000, "env steps per student", ge=1)
    preset: str = opt("", "train preset of every run (default: cartpole / atari-ppo / atari-dqn by env and algo)")
    overrides: list[str] = opt([], "extra train overrides, e.g. n_envs=4,eval_episodes=10")
    progress: bool = opt(False, "progress bar of each run")
    envs: list[str] = opt([], "several env ids (games), e.g. MinAtar/Breakout-v1,MinAtar/Asterix-v1 (default: env)")
    score: str = opt("group_mean_return", "per-run score of the aggregate", ("group_mean_return", "group_best_return"))
    references: list[str] = opt(
        [], "reference scores ENV=SCORE for normalisation (default: Atari human, else the best run of the compare)"
    )
    random_episodes: int = opt(10, "episodes of uniform random play per game (normalisation's zero)", ge=1)
    bootstrap_reps: int = opt(2000, "bootstrap replicates of the aggregate's CIs", ge=100)

    def validate(self) -> None:
        from agents.envs import parse_env_id

        for env in self.envs or [self.env]:
            parse_env_id(env)
        for entry in self.references:
            key, sep, value = entry.rpartition("=")
            try:
                float(value)
            except ValueError:
                key = ""
            if not sep or not key:
                raise WorkbenchError(f"bad reference '{entry}'; give ENV=SCORE, e.g. references=MinAtar/Breakout-v1=30")
        if not self.methods or not self.seeds:
            raise WorkbenchError("compare needs at least one method and one seed")
