"""The JukeMIR probe grid (Castellon et al. 2021), trained as one batched computation per group of probes.

216 probes: standardisation off/on x hidden width 0 (linear) or 512 x batch 64/256 x lr 1e-5/1e-4/1e-3 x dropout
.25/.5/.75 x L2 0/1e-4/1e-3, Adam, early stopping on the validation primary metric. As in the Myna paper, probes are
trained on chunk embeddings with the track's label, and their outputs are averaged over a track's chunks (logits,
as `MynaForAudioClassification` does) before scoring.

The probe is JukeMIR's `SimpleMLP` with `dropout_input=True`: dropout on the input embedding, then either one
linear layer, or Linear -> ReLU -> dropout -> Linear. Early stopping is checked once per epoch (JukeMIR checks every
8 steps and stops after 256 checks without improvement; with chunked training sets an epoch is the natural unit).

Probes that share a batch size and a standardisation see the same mini-batches, so they are trained together:
their weights are stacked along a leading probe dimension `P` and one `baddbmm` runs all of them. Probes of a
group also share their random numbers: the initial weights (from `seed`), the mini-batch order (`seed + 1`), the
input dropout uniforms (`seed + 2`) and the hidden dropout uniforms (`seed + 3`); a probe drops the units whose
uniform is below its own rate. Each probe is therefore exactly the single-probe training [`train_single_probe`]
of its configuration with that seed. L2 is Adam's (coupled) weight decay on every parameter, as
`torch.optim.Adam(weight_decay=l2)`.
"""

import itertools
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from modeling_myna import pool_chunks

from .scoring import MULTI_LABEL, SINGLE_LABEL, primary_batched_score


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
HIDDEN_WIDTH = 512
EVAL_BLOCK_ROWS = 2048  # chunk rows per forward when scoring, bounds the (P, rows, 512) activations


@dataclass(frozen=True)
class ProbeConfig:
    """One point of the grid; `hidden_size=0` is a linear probe (dropout then acts on the input only)."""

    standardize: bool
    hidden_size: int
    batch_size: int
    learning_rate: float
    dropout: float
    l2: float

    def name(self) -> str:
        return (
            f"std={int(self.standardize)} hidden={self.hidden_size} bs={self.batch_size} "
            f"lr={self.learning_rate:g} drop={self.dropout:g} l2={self.l2:g}"
        )


def probe_grid(fast: bool = False) -> list[ProbeConfig]:
    """The 216 configurations of SPEC §5 (JukeMIR), or an 8-probe `fast` subset for development."""
    if fast:
        axes = ([True], [0, HIDDEN_WIDTH], [64], [1e-4, 1e-3], [0.5], [0.0, 1e-3])
    else:
        axes = ([False, True], [0, HIDDEN_WIDTH], [64, 256], [1e-5, 1e-4, 1e-3], [0.25, 0.5, 0.75], [0.0, 1e-4, 1e-3])
    return [ProbeConfig(*values) for values in itertools.product(*axes)]


@dataclass
class ProbeData:
    """Chunk embeddings of the three splits, with per-track targets.

    `*_x` `(num_chunks, D)` float32, `*_track` `(num_chunks,)` track row of each chunk, `*_y` per track: class
    indices `(T,)`, multi-hot `(T, C)` or targets `(T, C)`.
    """

    train_x: torch.Tensor
    train_track: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_track: torch.Tensor
    valid_y: torch.Tensor
    test_x: torch.Tensor
    test_track: torch.Tensor
    test_y: torch.Tensor

    def to(self, device) -> "ProbeData":
        return ProbeData(**{k: v.to(device) for k, v in self.__dict__.items()})


@dataclass
class ProbeResult:
    """One probe's outcome: best validation primary score, the epoch it came from, and its weights then."""

    config: ProbeConfig
    valid_score: float
    best_epoch: int
    epochs_run: int
    state: dict[str, torch.Tensor] | None = None
    history: list[float] = field(default_factory=list)  # validation score after each epoch run

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "valid_score": self.valid_score,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "history": self.history,
        }


@dataclass
class Standardizer:
    """Per-dimension mean and std fitted on the training chunks only."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "Standardizer":
        std = x.std(0, unbiased=False)
        return cls(x.mean(0), torch.where(std > 0, std, torch.ones_like(std)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def init_probe_parameters(input_size: int, hidden_size: int, num_outputs: int, generator: torch.Generator) -> dict:
    """Initial weights in `(in, out)` layout, drawn as `nn.Linear` does (uniform in +-1/sqrt(fan_in))."""
    sizes = [(input_size, hidden_size), (hidden_size, num_outputs)] if hidden_size else [(input_size, num_outputs)]
    params = {}
    for layer, (fan_in, fan_out) in enumerate(sizes):
        bound = 1 / math.sqrt(fan_in)
        params[f"w{layer}"] = (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound
        params[f"b{layer}"] = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return params


def probe_loss(problem_type: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-probe mean loss: `outputs` `(P, B, C)` -> `(P,)`."""
    if problem_type == SINGLE_LABEL:
        return nn.functional.cross_entropy(
            outputs.transpose(1, 2), targets.expand(outputs.shape[0], -1), reduction="none"
        ).mean(-1)
    if problem_type == MULTI_LABEL:
        return nn.functional.binary_cross_entropy_with_logits(
            outputs, targets.expand_as(outputs), reduction="none"
        ).mean((1, 2))
    return ((outputs - targets) ** 2).mean((1, 2))


def chunk_targets(track_y: torch.Tensor, track: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Per-chunk training targets: each chunk carries its track's label."""
    y = track_y[track]
    return y.long() if problem_type == SINGLE_LABEL else y.float()


class StackedProbes:
    """`P` probes of one architecture as stacked tensors, with per-probe Adam (lr, L2) and dropout rates.

    `rows` holds each stacked probe's position in the original `configs`; [`keep_only`] drops the probes that
    stopped early, so that they cost nothing afterwards.
    """

    def __init__(self, configs: list[ProbeConfig], input_size: int, num_outputs: int, seed: int, device):
        self.configs = configs
        self.hidden = configs[0].hidden_size
        count = len(configs)
        init = init_probe_parameters(input_size, self.hidden, num_outputs, torch.Generator().manual_seed(seed))
        # Common random numbers: every probe of the stack starts from the same draw, as its single run would.
        self.params = {
            k: v.to(device).unsqueeze(0).repeat(count, 1, 1)
            if v.dim() == 2
            else v.to(device).view(1, 1, -1).repeat(count, 1, 1)
            for k, v in init.items()
        }
        for p in self.params.values():
            p.requires_grad_(True)
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        as_column = dict(device=device, dtype=torch.float32)
        self.lr = torch.tensor([c.learning_rate for c in configs], **as_column).view(-1, 1, 1)
        self.l2 = torch.tensor([c.l2 for c in configs], **as_column).view(-1, 1, 1)
        self.dropout = torch.tensor([c.dropout for c in configs], **as_column).view(-1, 1, 1)
        self.rows = torch.arange(count, device=device)
        self.step_count = 0

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def keep_only(self, keep: torch.Tensor) -> None:
        """Keeps the probes where the boolean `keep` `(P,)` is true (weights, Adam state and hyper-parameters)."""
        self.params = {k: v.detach()[keep].clone().requires_grad_(True) for k, v in self.params.items()}
        self.exp_avg = {k: v[keep] for k, v in self.exp_avg.items()}
        self.exp_avg_sq = {k: v[keep] for k, v in self.exp_avg_sq.items()}
        self.lr, self.l2, self.dropout, self.rows = self.lr[keep], self.l2[keep], self.dropout[keep], self.rows[keep]
        self.configs = [c for c, k in zip(self.configs, keep.tolist()) if k]

    def forward(
        self, x: torch.Tensor, input_uniforms: torch.Tensor | None = None, hidden_uniforms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`x` `(B, D)` shared by all probes -> `(P, B, C)`. Training passes the dropout uniforms, `(B, D)` for the
        input and `(B, H)` for the hidden layer; evaluation passes none."""
        p = self.params
        batch = x.unsqueeze(0).expand(len(self.configs), -1, -1)  # (P, B, D) view, no copy
        if input_uniforms is not None:
            batch = batch * (input_uniforms.unsqueeze(0) >= self.dropout) / (1 - self.dropout)  # (P, B, D)
        if not self.hidden:
            return torch.baddbmm(p["b0"], batch, p["w0"])
        hidden = torch.relu(torch.baddbmm(p["b0"], batch, p["w0"]))  # (P, B, H)
        if hidden_uniforms is not None:
            hidden = hidden * (hidden_uniforms.unsqueeze(0) >= self.dropout) / (1 - self.dropout)
        return torch.baddbmm(p["b1"], hidden, p["w1"])

    @torch.no_grad()
    def adam_step(self) -> None:
        """One Adam step per probe with coupled L2, the update of `torch.optim.Adam`."""
        self.step_count += 1
        beta1, beta2 = ADAM_BETAS
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.step_count)
        step_size = self.lr / bias_correction1
        for name, param in self.params.items():
            grad = param.grad + self.l2 * param
            self.exp_avg[name].lerp_(grad, 1 - beta1)
            self.exp_avg_sq[name].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (self.exp_avg_sq[name].sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            param.sub_(step_size * (self.exp_avg[name] / denom))
            param.grad = None

    @torch.no_grad()
    def track_outputs(self, x: torch.Tensor, track: torch.Tensor, num_tracks: int) -> torch.Tensor:
        """Per-track mean of the chunk outputs: `(P, num_tracks, C)`."""
        outputs = torch.cat([self.forward(block) for block in x.split(EVAL_BLOCK_ROWS)], dim=1)  # (P, N, C)
        return pool_chunks(outputs.transpose(0, 1), track, num_tracks).transpose(0, 1)

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index].detach().clone() for k, v in self.params.items()}


def apply_probe(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A trained probe's outputs (no dropout): `x` `(N, D)` -> `(N, C)`."""
    out = x @ state["w0"] + state["b0"].reshape(-1)
    if "w1" in state:
        out = torch.relu(out) @ state["w1"] + state["b1"].reshape(-1)
    return out


@dataclass
class GridSettings:
    max_epochs: int = 100
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    keep_states: str = "best"  # "best": the best probe and the best linear probe; "all": every probe
    extra: dict = field(default_factory=dict)


def train_grid(
    data: ProbeData,
    problem_type: str,
    metric: str,
    label_names,
    configs: list[ProbeConfig],
    settings: GridSettings,
    progress=None,
) -> list[ProbeResult]:
    """Trains every configuration, batched per (batch size, standardisation) group; one result per config, in order.

    Each probe keeps its best validation epoch (strict improvement) and stops after `patience` epochs without one.
    States are kept for the probes `settings.keep_states` asks for.
    """
    device = torch.device(settings.device)
    data = data.to(device)
    num_outputs = len(label_names)
    num_valid_tracks = data.valid_y.shape[0]
    standardizer = Standardizer.fit(data.train_x)
    results: dict[ProbeConfig, ProbeResult] = {}
    groups = {}
    for config in configs:
        groups.setdefault((config.batch_size, config.standardize), []).append(config)
    train_y = chunk_targets(data.train_y, data.train_track, problem_type)

    for (batch_size, standardize), group in groups.items():
        train_x = standardizer(data.train_x) if standardize else data.train_x
        valid_x = standardizer(data.valid_x) if standardize else data.valid_x
        stacks = []
        for hidden in sorted({c.hidden_size for c in group}):
            members = [c for c in group if c.hidden_size == hidden]
            stacks.append(StackedProbes(members, train_x.shape[1], num_outputs, settings.seed, device))
        order_generator = torch.Generator().manual_seed(settings.seed + 1)
        input_dropout_generator = torch.Generator().manual_seed(settings.seed + 2)
        hidden_dropout_generator = torch.Generator().manual_seed(settings.seed + 3)
        # Per probe of each stack, indexed by its original row (stacks shrink as probes stop).
        best = [torch.full((len(s),), -math.inf, dtype=torch.float64, device=device) for s in stacks]
        best_epoch = [torch.zeros(len(s), dtype=torch.long, device=device) for s in stacks]
        best_states = [{k: v.detach().clone() for k, v in s.params.items()} for s in stacks]
        epochs_run = [torch.zeros(len(s), dtype=torch.long, device=device) for s in stacks]
        history = [[[] for _ in range(len(s))] for s in stacks]
        original_configs = [list(s.configs) for s in stacks]
        reported = 0  # probes of this group already counted on the progress bar
        for epoch in range(1, settings.max_epochs + 1):
            if not any(len(s) for s in stacks):
                break
            permutation = torch.randperm(train_x.shape[0], generator=order_generator).to(device)
            for start in range(0, train_x.shape[0], batch_size):
                index = permutation[start : start + batch_size]
                x, y = train_x[index], train_y[index]
                # Drawn every step whoever is still training, so each stream matches a single probe's.
                input_uniforms = torch.rand(len(index), x.shape[1], generator=input_dropout_generator).to(device)
                for stack in stacks:
                    hidden_uniforms = None
                    if stack.hidden:
                        hidden_uniforms = torch.rand(len(index), stack.hidden, generator=hidden_dropout_generator)
                        hidden_uniforms = hidden_uniforms.to(device)
                    if not len(stack):
                        continue
                    probe_loss(problem_type, stack.forward(x, input_uniforms, hidden_uniforms), y).sum().backward()
                    stack.adam_step()
            for s, stack in enumerate(stacks):
                if not len(stack):
                    continue
                rows = stack.rows
                epochs_run[s][rows] += 1
                outputs = stack.track_outputs(valid_x, data.valid_track, num_valid_tracks)
                scores = primary_batched_score(problem_type, metric, outputs, data.valid_y, list(label_names))
                scores = torch.nan_to_num(scores.double(), nan=-math.inf)
                for row, score in zip(rows.tolist(), scores.tolist()):
                    history[s][row].append(score)
                improved = scores > best[s][rows]
                best[s][rows] = torch.where(improved, scores, best[s][rows])
                best_epoch[s][rows] = torch.where(improved, epoch, best_epoch[s][rows])
                for name, param in stack.params.items():
                    best_states[s][name][rows] = torch.where(
                        improved.view(-1, 1, 1), param.detach(), best_states[s][name][rows]
                    )
                still_training = (epoch - best_epoch[s][rows]) < settings.patience
                if not bool(still_training.all()):
                    stack.keep_only(still_training)
                    if progress is not None:  # the bar counts probes as they stop, not whole groups
                        stopped = int((~still_training).sum())
                        progress.update(stopped)
                        reported += stopped
            if progress is not None:
                training = sum(len(stack) for stack in stacks)
                progress.set_postfix_str(
                    f"group bs={batch_size} std={int(standardize)}: epoch {epoch}/{settings.max_epochs}, "
                    f"{training} probe(s) training"
                )
        for s in range(len(stacks)):
            for row, config in enumerate(original_configs[s]):
                results[config] = ProbeResult(
                    config,
                    float(best[s][row]),
                    int(best_epoch[s][row]),
                    int(epochs_run[s][row]),
                    {k: v[row].clone() for k, v in best_states[s].items()},
                    history[s][row],
                )
        if progress is not None:
            progress.update(len(group) - reported)  # those that ran to max_epochs

    ordered = [results[c] for c in configs]
    if settings.keep_states != "all":
        keep = {id(select_best(ordered))}
        linear = [r for r in ordered if r.config.hidden_size == 0]
        if linear:
            keep.add(id(select_best(linear)))
        for result in ordered:
            if id(result) not in keep:
                result.state = None
    for result in ordered:
        if result.state is not None:
            result.state = {k: v.cpu() for k, v in result.state.items()}
    return ordered


def select_best(results: list[ProbeResult]) -> ProbeResult:
    """The result with the highest VALIDATION score; ties go to the first in grid order."""
    return max(results, key=lambda r: (r.valid_score, -results.index(r)))


def train_single_probe(
    data: ProbeData, problem_type: str, metric: str, label_names, config: ProbeConfig, settings: GridSettings
) -> ProbeResult:
    """One probe trained the plain way (`nn.Linear` layers, `torch.optim.Adam`), with the grid's random numbers.

    The reference the batched grid is tested against; also handy to retrain one configuration.
    """
    data = data.to("cpu")
    standardizer = Standardizer.fit(data.train_x)
    train_x = standardizer(data.train_x) if config.standardize else data.train_x
    valid_x = standardizer(data.valid_x) if config.standardize else data.valid_x
    train_y = chunk_targets(data.train_y, data.train_track, problem_type)
    init = init_probe_parameters(
        train_x.shape[1], config.hidden_size, len(label_names), torch.Generator().manual_seed(settings.seed)
    )
    layers = []
    for layer in range(2 if config.hidden_size else 1):
        linear = nn.Linear(*init[f"w{layer}"].shape)
        with torch.no_grad():
            linear.weight.copy_(init[f"w{layer}"].T)
            linear.bias.copy_(init[f"b{layer}"])
        layers.append(linear)
    optimizer = torch.optim.Adam(
        [p for layer in layers for p in layer.parameters()],
        lr=config.learning_rate,
        betas=ADAM_BETAS,
        eps=ADAM_EPS,
        weight_decay=config.l2,
        foreach=False,
    )
    order_generator = torch.Generator().manual_seed(settings.seed + 1)
    input_dropout_generator = torch.Generator().manual_seed(settings.seed + 2)
    hidden_dropout_generator = torch.Generator().manual_seed(settings.seed + 3)

    def forward(x, input_uniforms=None, hidden_uniforms=None):
        if input_uniforms is not None:
            x = x * (input_uniforms >= config.dropout) / (1 - config.dropout)
        out = layers[0](x)
        if config.hidden_size:
            out = torch.relu(out)
            if hidden_uniforms is not None:
                out = out * (hidden_uniforms >= config.dropout) / (1 - config.dropout)
            out = layers[1](out)
        return out

    best_score, best_epoch, best_state, epochs_run, history = -math.inf, 0, None, 0, []
    for epoch in range(1, settings.max_epochs + 1):
        epochs_run = epoch
        permutation = torch.randperm(train_x.shape[0], generator=order_generator)
        for start in range(0, train_x.shape[0], config.batch_size):
            index = permutation[start : start + config.batch_size]
            input_uniforms = torch.rand(len(index), train_x.shape[1], generator=input_dropout_generator)
            hidden_uniforms = None
            if config.hidden_size:
                hidden_uniforms = torch.rand(len(index), config.hidden_size, generator=hidden_dropout_generator)
            loss = probe_loss(
                problem_type, forward(train_x[index], input_uniforms, hidden_uniforms).unsqueeze(0), train_y[index]
            )[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            outputs = pool_chunks(forward(valid_x), data.valid_track, data.valid_y.shape[0])
            score = float(
                primary_batched_score(problem_type, metric, outputs.unsqueeze(0), data.valid_y, list(label_names))[0]
            )
        if math.isnan(score):
            score = -math.inf
        history.append(score)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {}
            for layer, linear in enumerate(layers):
                best_state[f"w{layer}"] = linear.weight.detach().T.clone()
                best_state[f"b{layer}"] = linear.bias.detach().view(1, -1).clone()
        if epoch - best_epoch >= settings.patience:
            break
    return ProbeResult(config, best_score, best_epoch, epochs_run, best_state, history)


def track_outputs(
    state: dict[str, torch.Tensor], x: torch.Tensor, track: torch.Tensor, num_tracks: int
) -> torch.Tensor:
    """One trained probe's per-track outputs `(num_tracks, C)`: chunk outputs averaged per track."""
    with torch.no_grad():
        return pool_chunks(apply_probe(state, x), track, num_tracks)


__all__ = [
    "GridSettings",
    "ProbeConfig",
    "ProbeData",
    "ProbeResult",
    "Standardizer",
    "StackedProbes",
    "apply_probe",
    "probe_grid",
    "select_best",
    "track_outputs",
    "train_grid",
    "train_single_probe",
]
