"""The configuration schema: one dataclass per part of a run, with the current DreamerV3's values
as defaults and a comment per field (the README's config table documents every key).

`reverie.config` loads presets and overrides into these and validates them; import the classes
from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"  # Gymnasium id, `module:EnvId`, or a suite id such as `dmc:walker_walk`
    num_envs: int = 1  # parallel training envs; worker processes when > 1
    parallel: bool = True  # use worker processes when num_envs > 1
    max_restarts: int = 5  # rebuild an env that raises or dies, up to this many times in a row; 0 stops the run
    # inline: the learner steps the envs between its updates; process / ray: an actor steps them (and renders)
    # in another process / on Ray while the learner trains (reverie/run/actors.py)
    backend: str = "inline"
    policy_every: int = 10  # process / ray: updates between sending the learner's weights to the actor
    actor_queue: int = 8  # process: vector steps the actor may run ahead of the learner
    ray_address: str = ""  # ray: the cluster to join ("auto", "ray://host:10001"); "" starts a local Ray
    eval_envs: int = 1
    action_repeat: int = 1
    max_episode_steps: int = 0  # 0 keeps the env's own time limit
    # Options of the benchmark suites (dmc:, atari:, crafter); other envs ignore them.
    size: tuple[int, int] = (64, 64)  # rendered / resized image (height, width)
    gray: bool = False  # atari: greyscale frames (H, W, 1)
    sticky: bool = False  # atari: repeat the previous action with probability 0.25
    noops: int = 0  # atari: up to this many no-op actions at the start of an episode
    full_actions: bool = False  # atari: all 18 actions instead of the game's minimal set
    camera: int = -1  # dmc: camera id for the image; -1 picks the domain's default
    proprio: bool = True  # dmc: vector observations
    image: bool = True  # dmc: a rendered RGB image under the key "image"


@dataclass
class RunConfig:
    steps: int = 50_000  # total env (policy) steps of the run; a resumed run continues up to it
    # random-policy steps first; 0 (official DreamerV3): the policy acts from step 0. Training starts
    # after the prefill once replay holds one batch (batch_size × its window length) of steps
    prefill: int = 0
    train_ratio: float = 512.0  # replayed steps per policy step (DESIGN §3)
    eval_every: int = 5000  # policy steps between evaluations; 0: none during the run
    eval_episodes: int = 10
    eval_final: bool = True  # evaluate once more at the end of the run (also when eval_every is 0)
    log_every: float = 20.0  # seconds between metric rows
    report_every: float = 300.0  # seconds between open-loop prediction reports (videos); 0 disables
    report_sequences: int = 4  # replayed sequences shown side by side in the open-loop video
    train_every: int = 1  # policy steps between training bursts (Dreamer v1: 1000 steps, then its updates)
    checkpoint_every: float = 10.0  # minutes between checkpoints
    keep_checkpoints: int = 3
    max_nonfinite_updates: int = 100  # stop after this many skipped (NaN/inf) updates in a row; 0 never stops
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0: the cores other processes leave free, re-fitted every 5 s (run/threads.py)
    precision: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False  # torch.compile the per-step functions and the CNNs (see README, Performance)
    retain_memory: bool = True  # keep freed host memory for the next update (glibc mallopt; run/host_memory.py)


@dataclass
class ReplayConfig:
    capacity: int = 1_000_000  # steps, FIFO
    online: bool = True  # train on every fresh sequence once before sampling uniformly
    chunk_length: int = 1024  # steps per env in each file under logdir/replay/ (a crash loses at most one)
    # replayed sequences start from the latent stored at the step before them (official replay_context: 1);
    # 0 until its CartPole and DMC benchmarks are measured (issue 17)
    context: int = 0
    # memory: every step in RAM | disk: image steps in memory-mapped files under logdir/replay/ring/
    storage: str = "memory"


@dataclass
class RSSMConfig:
    deter: int = 512
    hidden: int = 64
    stoch: int = 32  # number of categorical latents
    classes: int = 4  # classes per latent
    blocks: int = 8  # block-diagonal GRU groups
    # init fan-in of the block GRU's layers: layer (official compute_fans: the whole layer's G·I) |
    # block (each block's I, std √G wider; Reverie before issue 17, kept for the CartPole study of issue 16)
    block_fan_in: str = "layer"
    unimix: float = 0.01
    img_layers: int = 2
    obs_layers: int = 1
    dyn_layers: int = 1
    # added to the GRU update gate's input, u = σ(x + update_bias); official −1 (h keeps ~0.73^t at init);
    # lower holds the state longer from the start (chrono init; the memory preset, issue 21)
    update_bias: float = -1.0
    free_nats: float = 1.0
    free_average: bool = False  # clip the batch-mean KL at free_nats (DreamerV1/V2) instead of each step's
    latent: str = "categorical"  # categorical (stoch × classes) | gaussian (stoch Normal dims; classes unused)
    min_std: float = 0.1  # gaussian latents: std = softplus(x) + min_std
    core: str = "block"  # block: the current block GRU | gru: one GRU cell over a joint (z, a) projection (2023, V2, V1)
    cell_norm: str = ""  # norm of the gru core's gates; empty = model.norm (V2 norms them although model.norm is none)
    initial: str = "zeros"  # zeros | learned: h_0 = tanh(w), z_0 = prior mode (DreamerV3 2023)


@dataclass
class EncoderConfig:
    mlp_keys: str = ".*"  # regex over observation keys routed to the MLP (non-image keys)
    cnn_keys: str = ".*"  # regex over observation keys routed to the CNN (3-D uint8 keys)
    units: int = 64
    layers: int = 3
    depth: int = 4  # CNN channels = depth × mults
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    resize: str = "pool"  # CNN stages: pool (conv + 2×2 max-pool) | stride (stride-2 conv, DreamerV3 2023)
    symlog: bool = True  # symlog-squash continuous vector keys (categorical keys always enter as one-hots)


@dataclass
class DecoderConfig(EncoderConfig):
    block_space: int = 8  # block groups of the deter → spatial projection (image decoder)
    dist: str = "mse"  # mse (sum of squared errors) | normal (unit-variance Normal NLL, V1/V2); categorical keys: cross-entropy


@dataclass
class HeadConfig:
    units: int = 64
    layers: int = 1
    bins: int = 255
    outscale: float = 1.0
    dist: str = "twohot"  # reward head: twohot (symexp bins) | twohot_symlog (2023) | mse (Normal(μ, 1), V1/V2)


@dataclass
class LossScales:
    rec: float = 1.0
    rew: float = 1.0
    con: float = 1.0
    dyn: float = 1.0
    rep: float = 0.1
    policy: float = 1.0
    value: float = 1.0
    repval: float = 0.3


@dataclass
class ModelConfig:
    act: str = "silu"
    norm: str = "rms"  # rms | layer | none
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    reward: HeadConfig = field(default_factory=lambda: HeadConfig(outscale=0.0))
    cont: HeadConfig = field(default_factory=HeadConfig)
    contdisc: bool = True  # fold the discount into the continue target (current version)


@dataclass
class ActorConfig:
    units: int = 64
    layers: int = 3
    minstd: float = 0.1
    maxstd: float = 1.0
    unimix: float = 0.0  # discrete policy's uniform mix: none in the current official code, 0.01 in 2023
    outscale: float = 0.01
    entropy: float = 3e-4
    dist: str = "bounded_normal"  # continuous actions: bounded_normal (Normal(tanh μ, σ)) | tanh_normal (V1)
    init_std: float = 5.0  # tanh_normal: std = softplus(x + ln(e^init_std − 1)) + minstd
    grad: str = "reinforce"  # reinforce | dynamics (backprop through the model) | auto (dynamics if continuous)
    expl_noise: float = 0.0  # continuous: Gaussian noise added to training actions (V1: 0.3)


@dataclass
class CriticConfig:
    units: int = 64
    layers: int = 3
    bins: int = 255
    outscale: float = 0.0
    slow_rate: float = 0.02  # EMA rate of the slow critic per update (1.0 = copy)
    slow_every: int = 1  # updates between slow-critic updates (V2: copy every 100)
    slow_reg: float = 1.0  # weight of the loss towards the slow critic
    slow_target: bool = False  # bootstrap the λ-returns with the slow critic (V2's target network)
    dist: str = "twohot"  # twohot | twohot_symlog (2023) | mse (V1/V2)


@dataclass
class ReturnNormConfig:
    kind: str = "percentile"  # percentile | none (advantages unscaled, V1/V2)
    rate: float = 0.01  # EMA rate: decay 0.99
    limit: float = 1.0  # scale = max(limit, P_hi − P_lo)
    lo: float = 5.0
    hi: float = 95.0


@dataclass
class PlannerConfig:
    """Planning on the world model with `behavior.kind=planner`: CEM (PlaNet, reverie/planners/cem.py),
    MPPI (TD-MPC2, reverie/planners/mppi.py; TD-MPC2's own settings: horizon 3, candidates 512,
    iterations 6, top_k 64) or a tree search (reverie/planners/search.py) over the RSSM prior with the
    actor as prior and the critic as value (discrete actions; needs `value`)."""

    kind: str = "cem"  # cem | mppi (continuous actions only) | search (discrete actions only)
    simulations: int = 16  # search: simulations per step
    tree: str = "gumbel"  # search: gumbel (Gumbel MuZero) | muzero (pUCT with Dirichlet root noise)
    horizon: int = 12
    candidates: int = 1000  # action sequences per iteration (MPPI: num_samples)
    iterations: int = 10
    top_k: int = 100  # elite sequences the belief is refit to (MPPI: num_elites)
    value: bool = False  # add the critic's value at the horizon (trains an actor-critic too)
    policy_samples: int = 24  # MPPI: candidates that are rollouts of the actor (with `value`; num_pi_trajs)
    min_std: float = 0.05  # MPPI: the belief's std is kept in [min_std, max_std]
    max_std: float = 2.0
    temperature: float = 0.5  # MPPI: elite weights softmax(temperature · return)


@dataclass
class ExploreConfig:
    """Plan2Explore (Sekar et al. 2020) as DreamerV3 2023 trains it (its `expl_rewards`, `disag_*`,
    `expl_until`): an exploration actor on ensemble disagreement beside the task actor
    (reverie/agents/dreamer/explore.py). Its actor and critics take `behavior.actor` / `critic`."""

    enabled: bool = False  # train the exploration actor and the ensemble (`--preset plan2explore`)
    until: int = 0  # train-mode policy steps the exploration actor acts in; 0: the whole run (2023 expl_until)
    extr: float = 1.0  # weight of the extrinsic advantage in the exploration actor's (2023 expl_rewards.extr)
    disag: float = 0.1  # weight of the disagreement advantage (2023 expl_rewards.disag)
    models: int = 8  # ensemble members, each predicting the next stoch from (deter, stoch, action)
    units: int = 64  # each member's MLP (2023 disag_head: the critic's size; size presets set both)
    layers: int = 3
    outscale: float = 1.0  # output layer init scale (2023 disag_head.outscale)


@dataclass
class BehaviorConfig:
    imag_horizon: int = 15
    imag_last: int = 0  # imagine from the last K posterior states of each sequence; 0 = all
    horizon: int = 333  # γ = 1 − 1/horizon
    lam: float = 0.95
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    retnorm: ReturnNormConfig = field(default_factory=ReturnNormConfig)
    repval: bool = True  # replay value loss
    kind: str = "actor_critic"  # actor_critic | planner (CEM on the world model, PlaNet)
    planner: PlannerConfig = field(default_factory=lambda: PlannerConfig())
    explore: ExploreConfig = field(default_factory=ExploreConfig)


@dataclass
class AdamGroupConfig:
    lr: float = 1e-4
    eps: float = 1e-8
    clip: float = 100.0  # global gradient-norm clip; 0 disables
    wd: float = 0.0  # decoupled weight decay


@dataclass
class OptimConfig:
    kind: str = "laprop"  # laprop: one optimiser (current) | adam: one per model, actor, critic (2023, V2, V1)
    lr: float = 4e-5
    eps: float = 1e-20
    beta1: float = 0.9
    beta2: float = 0.999
    agc: float = 0.3  # adaptive gradient clipping; 0 disables
    agc_pmin: float = 1e-3
    warmup: int = 1000  # linear lr warm-up in updates
    model: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(1e-4, 1e-8, 1000.0))
    actor: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(3e-5, 1e-5, 100.0))
    critic: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(3e-5, 1e-5, 100.0))
    # Plan2Explore's ensemble (2023 expl_opt); its exploration actor and critics take `actor` / `critic`
    ensemble: AdamGroupConfig = field(default_factory=lambda: AdamGroupConfig(1e-4, 1e-5, 100.0))


@dataclass
class KernelConfig:
    """The speed techniques of reverie/kernels/, each on or off (off: the reference path)."""
    small_softmax: bool = True  # softmax over < 16 classes along a transposed view (CPU)
    inverse_cdf: bool = True  # categorical samples by inverse CDF instead of torch.multinomial
    few_rows_float32: bool = True  # CPU work on < 64 rows leaves bf16 autocast for float32


@dataclass
class AgentConfig:
    family: str = "dreamer"  # the agent family (reverie/agents/): dreamer (DreamerV3, V2, V1, PlaNet), tdmpc2 or muzero


@dataclass
class TDMPC2Config:
    """TD-MPC2 (agent.family tdmpc2, reverie/agents/tdmpc2/): nicklashansen/tdmpc2 `config.yaml` and its
    5M model size (`common/__init__.py` MODEL_SIZE). Planning takes `behavior.planner` (MPPI); the
    training horizon is batch_length − 1."""

    latent_dim: int = 512
    enc_dim: int = 256
    enc_layers: int = 2
    mlp_dim: int = 512
    num_q: int = 5
    dropout: float = 0.01  # on the first layer of each Q-function
    simnorm_dim: int = 8
    num_bins: int = 101  # two-hot bins in symlog space [vmin, vmax]
    vmin: float = -10.0
    vmax: float = 10.0
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    entropy_coef: float = 1.0e-4
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    termination_coef: float = 1.0
    rho: float = 0.5  # weight ρ^t of step t of the horizon
    lr: float = 3.0e-4
    enc_lr_scale: float = 0.3
    grad_clip: float = 20.0
    tau: float = 0.01  # Polyak rate of the target Q-functions and of the policy's Q scale
    discount: float = 0.99  # TD-MPC2's heuristic: clip((L/5 − 1)/(L/5), 0.95, 0.995) for episodes of L steps
    episodic: bool = False  # learn a termination head (tasks whose episodes can end early)
    mpc: bool = True  # act by planning with MPPI; false: act with the policy prior


@dataclass
class MuZeroConfig:
    """MuZero / EfficientZero (agent.family muzero, reverie/agents/muzero/); starting values from
    LightZero's CartPole configs (latent 128, 25 simulations, batch 256, discount 0.997) and the
    MuZero paper (K = 5, n = 5 in Atari is 10; c1 1.25, c2 19652; Dirichlet fraction 0.25)."""

    search: str = "muzero"  # muzero (pUCT, Dirichlet root noise, visit targets) | gumbel (Gumbel MuZero)
    simulations: int = 25
    max_considered: int = 16  # gumbel: root actions sampled by Gumbel-top-k
    dirichlet_alpha: float = 0.3  # muzero: root noise Dir(α) (LightZero's root_dirichlet_alpha)
    dirichlet_fraction: float = 0.25
    temperature: float = 1.0  # muzero: train-mode actions ∝ N(root, a)^(1/T); eval takes the most visited
    c1: float = 1.25
    c2: float = 19652.0
    latent_dim: int = 128
    mlp_dim: int = 128  # hidden width of every MLP (not `units`: the size presets' "*.units" would set it)
    mlp_layers: int = 2  # hidden layers of the representation, dynamics and prediction MLPs
    cnn_depth: int = 32  # channels of the residual CNN's first stage (image keys)
    latent_norm: str = "minmax"  # minmax (MuZero: each latent scaled to [0, 1]) | none
    num_bins: int = 101  # two-hot bins of value and reward, in symlog space [vmin, vmax]
    vmin: float = -10.0
    vmax: float = 10.0
    unroll: int = 5  # K: dynamics steps unrolled per update
    td_steps: int = 5  # n of the n-step value targets (batch_length = unroll + td_steps + 1)
    discount: float = 0.997
    value_coef: float = 0.25
    reward_coef: float = 1.0
    policy_coef: float = 1.0
    consistency_coef: float = 2.0  # EfficientZero's self-supervised consistency loss; 0 turns it off
    projection_dim: int = 256
    dynamics_grad_scale: float = 0.5  # the gradient into each dynamics step is scaled by this (MuZero)
    lr: float = 3.0e-3
    wd: float = 1.0e-4
    grad_clip: float = 10.0
    target_update: int = 100  # updates between hard copies of the network into the target network
    reanalyse: float = 0.0  # fraction of each batch whose policy targets the current model searches again
    value_prefix: bool = False  # EfficientZero: an LSTM predicts the reward summed since the last reset
    lstm_dim: int = 128  # value prefix: the LSTM's width (LightZero's lstm_hidden_size)
    prefix_horizon: int = 5  # value prefix: the sum (and the LSTM) restarts every this many steps


@dataclass
class Config:
    seed: int = 0
    logdir: str = ""
    batch_size: int = 16
    batch_length: int = 64
    agent: AgentConfig = field(default_factory=AgentConfig)
    kernels: KernelConfig = field(default_factory=KernelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    run: RunConfig = field(default_factory=RunConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss_scales: LossScales = field(default_factory=LossScales)
    tdmpc2: TDMPC2Config = field(default_factory=TDMPC2Config)
    muzero: MuZeroConfig = field(default_factory=MuZeroConfig)
