"""Linear probes on frozen encoder outputs, following the AtariARI protocol (Anand et al. 2019).

For each annotated RAM variable a linear softmax classifier over the byte value is fitted to the
encoder's features; its weighted F1 on held-out episodes says how linearly decodable the variable
is from the latent. The protocol, as in AtariARI's ``get_episodes`` and ``ProbeTrainer``:

* frames from a random agent, split by episode 70 / 10 / 20 into train / validation / test after
  dropping episodes shorter than 64 frames (:mod:`vaerl.data.episodes`);
* variables whose label entropy is below 0.6 nats are dropped (nearly constant under random play);
* test frames that also occur in train or validation are removed;
* one linear classifier per variable, Adam, early stopping on validation accuracy;
* weighted F1 per variable on the test episodes, and its mean over variables.

Two baselines run beside the encoder: the same architecture at random initialisation, and a
majority classifier (the most frequent training value).

Scores are also averaged per AtariARI category (agent, small objects, other localisation,
score/clock/lives/display, misc; :data:`~vaerl.evaluation.annotations.CATEGORIES`) and over the
ball and player variables together (agent plus small-object localisation), the objects the game is about.

A reward probe reads, with the same protocol, the clipped reward of the next step from the same
features: the label of frame ``t`` is ``sign(reward[t])`` in {-1, 0, +1}, where ``reward[t]`` is the
reward the env returned for the action taken at frame ``t`` (summed over the env's frame skip), as
:func:`vaerl.data.collect_frames` stores it. It asks whether the latent shows a scoring event
coming, which RL needs and which is cheap to measure. Rewards are rare under random play, so the
probe weighs classes by inverse training frequency, stops on validation balanced accuracy, and
reports balanced accuracy and the F1 of the nonzero classes beside weighted F1 (which a majority
classifier makes look good).

One simplification, stated here because it changes cost, not results: each classifier only has
outputs for byte values seen in training. A 256-way softmax trained with cross-entropy never
predicts an unseen value either (its logit is only ever pushed down), so the predictions are the
same while the output layer is 3-10x smaller.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vaerl.data import EpisodeSplit, FrameDataset, drop_duplicates, split_episodes
from vaerl.encoder import Encoder
from vaerl.errors import DatasetError
from vaerl.evaluation.annotations import CATEGORIES, GameAnnotation

log = logging.getLogger(__name__)

BASELINES = ("random_init", "majority")


# ---------------------------------------------------------------------------------------------- metrics
def class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[int, tuple[float, int]]:
    """``{value: (F1, true count)}`` for each value that occurs in ``y_true``.

    Per class ``F1 = 2 TP / (true count + predicted count)``. A value that is predicted but never
    true is not listed; its false positives still count, as false negatives of the true values.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need two equally long, non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    classes = np.union1d(y_true, y_pred)
    t, p = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    true_count = np.bincount(t, minlength=len(classes))
    pred_count = np.bincount(p, minlength=len(classes))
    tp = np.bincount(t[t == p], minlength=len(classes))
    f1 = 2.0 * tp / np.maximum(true_count + pred_count, 1)
    return {int(c): (float(f), int(n)) for c, f, n in zip(classes, f1, true_count) if n > 0}


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 per class averaged with weights = true class counts (sklearn's ``average="weighted"``)."""
    per_class = class_f1(y_true, y_pred).values()
    return float(sum(f * n for f, n in per_class) / sum(n for _, n in per_class))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Recall averaged over the values that occur in ``y_true``: 1 / (number of values) for a constant guess."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


def label_entropy(labels: np.ndarray) -> float:
    """Entropy (nats) of the empirical distribution of ``labels``."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    probs = counts / counts.sum()
    return max(0.0, float(-(probs * np.log(probs)).sum()))


def majority_predictions(train_labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` copies of the most frequent value of each column of ``train_labels`` ``(N, V)``."""
    modes = []
    for column in np.asarray(train_labels, dtype=np.int64).T:
        values, counts = np.unique(column, return_counts=True)
        modes.append(values[counts.argmax()])
    return np.tile(np.asarray(modes, dtype=np.int64), (n, 1))


# ---------------------------------------------------------------------------------------------- features
def random_init_encoder(encoder: Encoder, seed: int = 0) -> Encoder:
    """The same architecture and preprocessing as ``encoder``, with freshly initialised weights."""
    devices = [encoder.device] if encoder.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = type(encoder.model)(copy.deepcopy(encoder.model.config))
    return Encoder(model, encoder.spec, encoder.info, encoder.device)


# ---------------------------------------------------------------------------------------------- probes
class LinearProbes(nn.Module):
    """One linear softmax classifier per variable, evaluated together as a single matrix product.

    ``classes[v]`` are the byte values classifier ``v`` can predict (those seen in training); the
    output columns hold the classifiers one after the other. Inputs are standardised with the
    training mean and std first: the same hypothesis class, and Adam needs no per-encoder learning rate.
    ``class_weight`` (one per output column) weighs each target's cross-entropy, as ``weight`` in
    ``F.cross_entropy``; ``None`` weighs all alike.
    """

    def __init__(self, in_dim: int, classes: list[np.ndarray], mean: torch.Tensor, std: torch.Tensor,
                 class_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        sizes = [len(c) for c in classes]
        self.linear = nn.Linear(in_dim, sum(sizes))
        self.sizes = sizes
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.register_buffer("class_weight", torch.ones(sum(sizes)) if class_weight is None else class_weight.float())
        self.register_buffer("values", torch.as_tensor(np.concatenate(classes), dtype=torch.long))
        self.register_buffer("offsets", torch.as_tensor(np.cumsum([0, *sizes[:-1]]), dtype=torch.long))
        self.register_buffer("variable", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of all classifiers side by side, ``(N, total classes)``."""
        return self.linear((x - self.mean) / self.std)

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-variable logits ``(N, classes_v)``."""
        return logits.split(self.sizes, dim=1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum over variables of the (class-weighted) mean cross-entropy; ``targets`` are class positions
        ``(N, V)``, all >= 0.

        Computed for all variables at once (a segmented log-sum-exp) instead of one
        ``cross_entropy`` call per variable: Breakout has 36 of them.
        """
        n, num_vars = len(logits), len(self.sizes)
        column_var = self.variable.expand(n, -1)
        # log-sum-exp within each variable's columns, shifted by that variable's largest logit
        peak = logits.new_full((n, num_vars), -torch.inf).scatter_reduce(1, column_var, logits.detach(), "amax")
        shifted = (logits - peak.gather(1, column_var)).exp()
        lse = logits.new_zeros(n, num_vars).scatter_add(1, column_var, shifted).log() + peak
        columns = targets + self.offsets
        picked = logits.gather(1, columns)
        weight = self.class_weight[columns]
        return ((lse - picked) * weight).sum(0).div(weight.sum(0)).sum()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """Predicted byte values ``(N, num_variables)``."""
        out = []
        for start in range(0, len(x), batch_size):
            logits = self.split(self(x[start:start + batch_size].to(self.mean.device)))
            picks = torch.stack([lg.argmax(1) for lg in logits], dim=1) + self.offsets
            out.append(self.values[picks].cpu())
        return torch.cat(out).numpy() if out else np.empty((0, len(self.sizes)), np.int64)


def compact_labels(labels: np.ndarray, classes: list[np.ndarray]) -> torch.Tensor:
    """Byte values ``(N, V)`` -> class positions per variable; values unseen in training become -1."""
    out = np.full(labels.shape, -1, dtype=np.int64)
    for v, values in enumerate(classes):
        pos = np.searchsorted(values, labels[:, v])
        pos = np.minimum(pos, len(values) - 1)
        out[:, v] = np.where(values[pos] == labels[:, v], pos, -1)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class ProbeFit:
    probes: LinearProbes
    epochs: list[int]
    """Epoch (1-based) whose weights each variable's classifier kept."""
    val_accuracy: list[float]


def fit_linear_probes(
    train_x: torch.Tensor,
    train_y: np.ndarray,
    val_x: torch.Tensor,
    val_y: np.ndarray,
    *,
    lr: float = 1e-3,
    batch_size: int = 128,
    max_epochs: int = 100,
    patience: int = 10,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    balanced: bool = False,
) -> ProbeFit:
    """Fit one linear classifier per column of ``train_y`` ``(N, V)`` on features ``train_x`` ``(N, D)``.

    Each classifier keeps the weights of its best validation-accuracy epoch and stops improving
    after ``patience`` epochs without progress; training ends when all have stopped. With
    ``balanced``, for rare labels such as rewards, each class's loss is weighted by the inverse of
    its training frequency (sklearn's ``class_weight="balanced"``) and epochs are chosen by
    validation balanced accuracy.
    """
    device = torch.device(device)
    train_y, val_y = np.asarray(train_y, np.int64), np.asarray(val_y, np.int64)
    if train_y.ndim != 2 or len(train_y) != len(train_x) or len(val_y) != len(val_x):
        raise ValueError(f"features and labels disagree: train {tuple(train_x.shape)} vs {train_y.shape}, "
                         f"val {tuple(val_x.shape)} vs {val_y.shape}")
    classes = [np.unique(column) for column in train_y.T]
    x = train_x.float().to(device)
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features stay constant (zero)
    y = compact_labels(train_y, classes)
    class_weight = None
    if balanced:
        counts = [torch.bincount(y[:, v], minlength=len(c)).float() for v, c in enumerate(classes)]
        class_weight = torch.cat([len(y) / (len(n) * n) for n in counts])
    probes = LinearProbes(x.shape[1], classes, mean, std, class_weight).to(device)
    y = y.to(device)
    vx, vy = val_x.float().to(device), compact_labels(val_y, classes).to(device)

    optimizer = torch.optim.Adam(probes.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n_vars = train_y.shape[1]
    best_acc, best_epoch, waited = [-1.0] * n_vars, [0] * n_vars, [0] * n_vars
    best_weight, best_bias = probes.linear.weight.detach().clone(), probes.linear.bias.detach().clone()
    bounds = torch.cumsum(torch.tensor([0, *probes.sizes]), 0).tolist()

    for epoch in range(1, max_epochs + 1):
        # one pass over the training frames in random minibatches
        probes.train()
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            batch = batch.to(device)
            loss = probes.loss(probes(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        # per-variable early stopping on validation accuracy; unseen values count as errors
        probes.eval()
        with torch.no_grad():
            for v, lg in enumerate(probes.split(probes(vx))):
                hit = (lg.argmax(1) == vy[:, v]).float()
                acc = (float(torch.stack([hit[vy[:, v] == c].mean() for c in vy[:, v].unique()]).mean())
                       if balanced else float(hit.mean()))
                if acc > best_acc[v]:
                    best_acc[v], best_epoch[v], waited[v] = acc, epoch, 0
                    best_weight[bounds[v]:bounds[v + 1]] = probes.linear.weight[bounds[v]:bounds[v + 1]]
                    best_bias[bounds[v]:bounds[v + 1]] = probes.linear.bias[bounds[v]:bounds[v + 1]]
                else:
                    waited[v] += 1
        if all(w >= patience for w in waited):
            break

    with torch.no_grad():
        probes.linear.weight.copy_(best_weight)
        probes.linear.bias.copy_(best_bias)
    log.debug("probes stopped after %d epochs; kept epochs %s", epoch, best_epoch)
    return ProbeFit(probes.eval(), best_epoch, best_acc)


def score_predictions(names: list[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, dict[str, float]]:
    """``{variable: {"f1": weighted F1, "accuracy": ...}}`` for label columns ``names``."""
    return {name: {"f1": weighted_f1(y_true[:, v], y_pred[:, v]),
                   "accuracy": float((y_true[:, v] == y_pred[:, v]).mean())}
            for v, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------- reward
REWARD_EXTRA = "reward"
"""The dataset extra holding ``reward[t]``, the reward returned for the action taken at frame ``t``."""


def reward_labels(rewards: np.ndarray) -> np.ndarray:
    """Clipped reward of the next step, ``sign(reward[t])`` in {-1, 0, +1} (DQN's reward clipping)."""
    return np.sign(np.asarray(rewards, dtype=np.float64)).astype(np.int64)


def score_reward(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Reward-probe scores: weighted F1, accuracy, balanced accuracy, and the mean F1 of the nonzero
    rewards that occur in ``y_true`` (``None`` when none does), which a majority guess of 0 scores 0."""
    nonzero = [f for c, (f, _) in class_f1(y_true, y_pred).items() if c != 0]
    return {"f1": weighted_f1(y_true, y_pred), "accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()),
            "balanced_accuracy": balanced_accuracy(y_true, y_pred),
            "nonzero_f1": float(np.mean(nonzero)) if nonzero else None}


# ---------------------------------------------------------------------------------------------- the protocol
PROBED_PARTS = ("all", "gaussian", "foreground")


def probed_columns(encoder: Encoder, part: str) -> slice:
    """The columns of ``encoder``'s latent that ``part`` (:attr:`ProbeSettings.part`) names."""
    if part == "all":
        return slice(None)
    if encoder.kind != "vae":
        raise ValueError(f"probe.part={part!r} probes a part of a VAE's latent; this is a {encoder.kind} encoder: "
                         "use probe.part=all")
    gaussian = int(encoder.model.config.latent_dim)  # the VAE's latent: its Gaussian means, then its foreground path
    if part == "gaussian":
        return slice(0, gaussian)
    if encoder.latent_dim() == gaussian:
        raise ValueError("probe.part=foreground probes a VAE's foreground path (cells, sums, parts or object "
                         "channels); this encoder has none: use probe.part=all or probe.part=gaussian")
    return slice(gaussian, None)


@dataclass
class ProbeSettings:
    """How probe frames are collected and probes trained (defaults: AtariARI, except where noted)."""

    frames: int = 30_000
    """Random-agent frames (with RAM and rewards) to collect (AtariARI: 50k); reused when a matching dataset exists."""
    data_seed: int = 10_000
    """Seed of the probe data collection; differs from pretraining seeds so probe frames are new frames."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    min_episode_length: int = 64
    entropy_threshold: float = 0.6
    """Variables whose label entropy (nats) is below this are dropped."""
    remove_duplicates: bool = True
    """Drop test frames identical to a train or validation frame."""
    mode: str = "mean"
    """Encoder output that is probed: ``mean`` (VAE posterior mean / VQ-VAE quantised grid) or ``sample``."""
    part: str = "all"
    """Which of its numbers: ``all``, the latent the wrappers hand agents; ``gaussian``, a VAE's Gaussian part
    alone (without its foreground path, which a random-init encoder has too): what training adds; or
    ``foreground``, that path alone. The default's signed cells are linear in the frame, so a random init,
    which subtracts another background, differs by a constant per number that the probes' standardisation
    removes: both score alike. Sums and unsigned cells (``|frame - background|``) and learned parts or object
    channels differ at random init."""
    lr: float = 1e-3
    """Adam learning rate on standardised features (AtariARI: 3e-4 on raw features)."""
    batch_size: int = 128
    """Minibatch size (AtariARI: 64)."""
    max_epochs: int = 100
    patience: int = 10
    """Epochs without a better validation accuracy before a classifier stops (AtariARI: 15)."""
    weight_decay: float = 0.0
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.mode not in ("mean", "sample"):
            raise ValueError(f"probe.mode must be 'mean' or 'sample', got {self.mode!r}")
        if self.part not in PROBED_PARTS:
            raise ValueError(f"probe.part must be one of {PROBED_PARTS}, got {self.part!r}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"probe.val_fraction ({self.val_fraction}) and probe.test_fraction ({self.test_fraction}) "
                             "must be in (0, 1) and leave episodes for training")


@dataclass
class ProbeReport:
    """Per-variable probe scores of an encoder and its baselines on one game."""

    game: str
    variables: list[str]
    scores: dict[str, dict[str, dict[str, float]]]
    """method -> variable -> {"f1", "accuracy"}; methods: ``encoder`` plus the baselines."""
    dropped: dict[str, float] = field(default_factory=dict)
    """Variables dropped for low label entropy -> their entropy in nats."""
    sizes: dict[str, int] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    """AtariARI category -> its probed variables (those kept after the entropy filter)."""
    reward: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """method -> reward-probe scores (:func:`score_reward`); empty when the frames hold no rewards."""

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def mean_f1(self, method: str = "encoder") -> float:
        values = [self.scores[method][v]["f1"] for v in self.variables]
        return float(np.mean(values)) if values else math.nan

    def groups(self) -> dict[str, list[str]]:
        """``ball_and_player`` (agent and small-object localisation together), then each category, with
        their probed variables; groups without any are left out."""
        objects = [v for v in self.variables if any(v in self.categories.get(c, ()) for c in OBJECT_CATEGORIES)]
        groups = {BALL_AND_PLAYER: objects, **{c: list(self.categories.get(c, ())) for c in CATEGORIES}}
        return {name: members for name, members in groups.items() if members}

    def group_f1(self, method: str = "encoder") -> dict[str, float]:
        """Mean weighted F1 of ``method`` over the variables of each of :meth:`groups`."""
        return {name: float(np.mean([self.scores[method][v]["f1"] for v in members]))
                for name, members in self.groups().items()}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean_f1"] = {method: self.mean_f1(method) for method in self.methods}
        data["group_f1"] = {method: self.group_f1(method) for method in self.methods}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def table(self) -> str:
        """A markdown table: weighted F1 per variable and method, the mean, the mean per category, the
        reward probe, and the published reference."""
        header = "| variable | " + " | ".join(METHOD_TITLES.get(m, m) for m in self.methods) + " |"
        lines = [header, "|---" * (len(self.methods) + 1) + "|"]
        for var in self.variables:
            lines.append(f"| {var} | " + " | ".join(f"{self.scores[m][var]['f1']:.2f}" for m in self.methods) + " |")
        lines.append("| **mean F1** | " + " | ".join(f"**{self.mean_f1(m):.2f}**" for m in self.methods) + " |")
        group_f1 = {m: self.group_f1(m) for m in self.methods}
        for name, members in self.groups().items():
            lines.append(f"| mean F1, {GROUP_TITLES[name]} ({len(members)}) | "
                         + " | ".join(f"{group_f1[m][name]:.2f}" for m in self.methods) + " |")
        if self.reward:
            for metric, title in REWARD_TITLES.items():
                lines.append(f"| {title} | " + " | ".join(format_score(self.reward.get(m, {}).get(metric))
                                                        for m in self.methods) + " |")
        notes = []
        if self.categories:
            notes.append("categories (AtariARI): " + "; ".join(
                f"{GROUP_TITLES[name]} = {compact_names(members)}" for name, members in self.groups().items()))
        reward_info = self.info.get("reward", {})
        if self.reward:
            notes.append(f"reward: {REWARD_LABEL}; test frames per label {reward_info.get('test_counts')}")
        elif reward_info.get("skipped"):
            notes.append(f"reward probe skipped: {reward_info['skipped']}")
        if self.sizes:
            notes.append("frames: train {train}, val {val}, test {test} ({duplicates} duplicates of train/val "
                         "frames removed), {episodes} episodes".format(**{"duplicates": 0, **self.sizes}))
        if self.dropped:
            notes.append("dropped for label entropy < {:.2g} nats: {}".format(
                self.info.get("entropy_threshold", 0.6), compact_names(list(self.dropped))))
        if self.reference:
            notes.append("published mean F1: " + ", ".join(f"{k} {v:.2f}" for k, v in self.reference.items()))
        return "\n".join(lines + [""] + notes)


def compact_names(names: list[str]) -> str:
    """``a, b_0, b_1, ..., b_29`` -> ``a, b_0..29``: numbered variables (AtariARI's lists) shown as one range."""
    groups: dict[str, list[int]] = {}
    for name in names:
        stem, _, number = name.rpartition("_")
        key = stem if number.isdigit() and stem else name
        groups.setdefault(key, []).append(int(number) if key == stem else -1)
    parts = []
    for key, numbers in groups.items():
        numbers = sorted(n for n in numbers if n >= 0)
        if len(numbers) >= 3 and numbers == list(range(numbers[0], numbers[-1] + 1)):
            parts.append(f"{key}_{numbers[0]}..{numbers[-1]}")
        else:
            parts += [f"{key}_{n}" for n in numbers] or [key]
    return ", ".join(parts)


def format_score(value: float | None) -> str:
    """``0.87``, or ``–`` for a score that does not exist (no nonzero reward among the test frames)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


METHOD_TITLES = {"encoder": "encoder", "random_init": "random init", "majority": "majority"}
BALL_AND_PLAYER = "ball_and_player"
OBJECT_CATEGORIES = ("agent_localization", "small_object_localization")
"""The categories that make up ``ball_and_player``: the player and the small objects (ball, missiles)."""
GROUP_TITLES = {BALL_AND_PLAYER: "ball & player", "small_object_localization": "small objects",
                "agent_localization": "agent", "other_localization": "other loc.",
                "score_clock_lives_display": "score/clock/lives", "misc": "misc"}
REWARD_TITLES = {"f1": "reward F1", "balanced_accuracy": "reward bal. acc.", "nonzero_f1": "reward ±1 F1"}
REWARD_LABEL = "sign of the reward returned for the action taken at the frame"


def probe_encoder(
    encoder: Encoder,
    dataset: FrameDataset,
    annotation: GameAnnotation,
    *,
    settings: ProbeSettings | None = None,
    baselines: tuple[str, ...] | list[str] = BASELINES,
    seed: int = 0,
) -> ProbeReport:
    """Run the probe protocol for ``encoder`` (and ``baselines``) on a dataset collected with RAM.

    When the dataset also holds rewards, the reward probe runs on the same split and features.
    """
    settings = settings or ProbeSettings()
    columns = probed_columns(encoder, settings.part)  # a part the encoder lacks stops before any work
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}: choose from {BASELINES}")
    labels_all = annotation.labels(dataset.extra("ram"))

    # split by episode, then drop near-constant variables and leaked test frames
    split = split_episodes(dataset.episodes, val_fraction=settings.val_fraction,
                           test_fraction=settings.test_fraction, min_length=settings.min_episode_length, seed=seed)
    used = np.concatenate([split.train, split.val, split.test])
    entropies = {name: label_entropy(labels_all[used, v]) for v, name in enumerate(annotation.variables)}
    keep = [v for v, name in enumerate(annotation.variables) if entropies[name] >= settings.entropy_threshold]
    names = [list(annotation.variables)[v] for v in keep]
    dropped = {name: entropies[name] for name in annotation.variables if name not in names}
    if not names:
        raise DatasetError(f"every annotated variable of {annotation.name} has label entropy below "
                           f"{settings.entropy_threshold} nats on these frames: collect more or longer episodes")
    duplicates = 0
    if settings.remove_duplicates:
        split, duplicates = drop_duplicates(dataset, split, encoder.spec.frame_stack)
    if len(split.test) == 0:
        raise DatasetError("every test frame also occurs in the training episodes; collect more frames")
    labels = labels_all[:, keep].astype(np.int64)
    y_train, y_val, y_test = labels[split.train], labels[split.val], labels[split.test]
    rewards, reward_info = _reward_split(dataset, split)

    scores: dict[str, dict[str, dict[str, float]]] = {}
    reward: dict[str, dict[str, float | None]] = {}
    epochs: dict[str, list[int]] = {}
    encoders = {"encoder": encoder}
    if "random_init" in baselines:
        encoders["random_init"] = random_init_encoder(encoder, seed)
    for method, enc in encoders.items():
        log.info("probing %s features of %s on %d variables", method, annotation.name, len(names))
        feats = {part: enc.encode_dataset(dataset, getattr(split, part), settings.mode,
                                          settings.encode_batch_size)[:, columns]
                 for part in ("train", "val", "test")}
        fit_options = {"lr": settings.lr, "batch_size": settings.batch_size, "max_epochs": settings.max_epochs,
                       "patience": settings.patience, "weight_decay": settings.weight_decay, "seed": seed,
                       "device": enc.device}
        fit = fit_linear_probes(feats["train"], y_train, feats["val"], y_val, **fit_options)
        scores[method] = score_predictions(names, y_test, fit.probes.predict(feats["test"]))
        epochs[method] = fit.epochs
        if rewards is not None:
            reward_fit = fit_linear_probes(feats["train"], rewards.train[:, None], feats["val"], rewards.val[:, None],
                                           balanced=True, **fit_options)
            reward[method] = score_reward(rewards.test, reward_fit.probes.predict(feats["test"])[:, 0])
    if "majority" in baselines:
        scores["majority"] = score_predictions(names, y_test, majority_predictions(y_train, len(y_test)))
        if rewards is not None:
            reward["majority"] = score_reward(rewards.test, majority_predictions(rewards.train[:, None],
                                                                                 len(rewards.test))[:, 0])

    sizes = {"train": len(split.train), "val": len(split.val), "test": len(split.test), "duplicates": duplicates,
             "episodes": len(np.unique(dataset.episodes[used])), "short_episodes": split.short_episodes}
    info = {"entropy_threshold": settings.entropy_threshold, "mode": settings.mode, "kind": encoder.kind,
            "latent_dim": encoder.latent_dim(settings.mode), "latent": encoder.describe_latent(),
            "epochs": epochs, "dataset": str(dataset.path),
            "input_shape": list(encoder.spec.input_shape), "settings": dataclasses.asdict(settings),
            "reward": reward_info}
    categories = {c: [v for v in members if v in names] for c, members in annotation.categories.items()}
    return ProbeReport(annotation.name, names, scores, dropped, sizes, dict(annotation.reference), info,
                       {c: members for c, members in categories.items() if members}, reward)


@dataclass(frozen=True)
class RewardLabels:
    """Clipped next-step rewards of the train / validation / test frames of a split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _reward_split(dataset: FrameDataset, split: EpisodeSplit) -> tuple[RewardLabels | None, dict[str, Any]]:
    """The reward labels of ``split`` and what the report says about them, or ``None`` and why not."""
    if REWARD_EXTRA not in dataset.extra_names:
        return None, {"skipped": "the frames were collected without rewards (extras: [ram, reward])"}
    labels = reward_labels(dataset.extra(REWARD_EXTRA))
    rewards = RewardLabels(labels[split.train], labels[split.val], labels[split.test])
    info: dict[str, Any] = {"label": REWARD_LABEL, **{
        f"{part}_counts": {str(v): int(n) for v, n in zip(*np.unique(getattr(rewards, part), return_counts=True))}
        for part in ("train", "test")}}
    if len(np.unique(rewards.train)) < 2:
        return None, {**info, "skipped": "every training frame has the same clipped reward; collect more frames"}
    return rewards, info


__all__ = ["BASELINES", "LinearProbes", "ProbeFit", "ProbeReport", "ProbeSettings", "RewardLabels",
           "balanced_accuracy", "class_f1", "fit_linear_probes", "label_entropy", "majority_predictions",
           "probe_encoder", "random_init_encoder", "reward_labels", "score_predictions", "score_reward",
           "weighted_f1"]
