"""The batched JukeMIR grid: its configurations, equality with plain single-probe training, chunk averaging and
early stopping on the best validation epoch."""

import itertools

import pytest
import torch

from myna_evaluation.grid import (
    GridSettings,
    ProbeConfig,
    ProbeData,
    StackedProbes,
    probe_grid,
    select_best,
    track_outputs,
    train_grid,
    train_single_probe,
)
from myna_evaluation.scoring import MULTI_LABEL, REGRESSION, SINGLE_LABEL, primary_batched_score


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_data(problem_type, num_outputs=3, dim=12, chunks=3, sizes=(40, 20, 20), seed=0, signal=1.0) -> ProbeData:
    """Chunk embeddings with a planted linear signal of each track's label."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(num_outputs, dim, generator=generator)
    tensors = {}
    for prefix, tracks in zip(("train", "valid", "test"), sizes):
        if problem_type == SINGLE_LABEL:
            y = torch.randint(0, num_outputs, (tracks,), generator=generator)
            signal_rows = torch.nn.functional.one_hot(y, num_outputs).float()
        elif problem_type == MULTI_LABEL:
            y = (torch.rand(tracks, num_outputs, generator=generator) < 0.4).float()
            y[0], y[1] = 1.0, 0.0
            signal_rows = y
        else:
            y = torch.randn(tracks, num_outputs, generator=generator)
            signal_rows = y
        track = torch.arange(tracks).repeat_interleave(chunks)
        x = torch.randn(tracks * chunks, dim, generator=generator) + signal * (signal_rows @ directions)[track] + 3.0
        tensors.update({f"{prefix}_x": x, f"{prefix}_track": track, f"{prefix}_y": y})
    return ProbeData(**tensors)


def test_the_grid_is_jukemirs_216_configurations():
    grid = probe_grid()
    assert len(grid) == 216 == len(set(grid))
    assert {c.hidden_size for c in grid} == {0, 512}
    assert {c.batch_size for c in grid} == {64, 256}
    assert {c.learning_rate for c in grid} == {1e-5, 1e-4, 1e-3}
    assert {c.dropout for c in grid} == {0.25, 0.5, 0.75}
    assert {c.l2 for c in grid} == {0.0, 1e-4, 1e-3}
    assert {c.standardize for c in grid} == {False, True}
    assert len(probe_grid(fast=True)) == 8 and set(probe_grid(fast=True)) <= set(grid)


@pytest.mark.parametrize(
    "problem_type, metric",
    [(SINGLE_LABEL, "myna_accuracy"), (MULTI_LABEL, "myna_tagging"), (REGRESSION, "myna_r2")],
)
def test_batched_grid_equals_single_probe_training(problem_type, metric):
    data = make_data(problem_type)
    labels = ["a", "b", "c"]
    configs = [
        ProbeConfig(*v)
        for v in itertools.product([False, True], [0, 512], [16], [1e-3, 1e-2], [0.25, 0.75], [0.0, 1e-3])
    ]
    settings = GridSettings(max_epochs=6, patience=3, seed=7, keep_states="all")
    batched = train_grid(data, problem_type, metric, labels, configs, settings)
    for index in (0, 3, 6, 9, 12, 15):  # linear and hidden, both standardisations, every lr / dropout / L2
        single = train_single_probe(data, problem_type, metric, labels, configs[index], settings)
        result = batched[index]
        assert result.config == single.config
        assert result.best_epoch == single.best_epoch
        assert result.epochs_run == single.epochs_run
        assert result.valid_score == pytest.approx(single.valid_score, rel=1e-5, abs=1e-6)
        assert result.history == pytest.approx(single.history, rel=1e-5, abs=1e-6)
        for name in single.state:
            torch.testing.assert_close(result.state[name], single.state[name], atol=1e-5, rtol=1e-4)


def test_probes_of_a_group_differ_only_by_their_configuration():
    data = make_data(SINGLE_LABEL)
    configs = [ProbeConfig(True, 0, 16, lr, 0.5, 0.0) for lr in (1e-4, 1e-2)]
    results = train_grid(
        data,
        SINGLE_LABEL,
        "myna_accuracy",
        ["a", "b", "c"],
        configs,
        GridSettings(max_epochs=3, patience=3, keep_states="all"),
    )
    assert not torch.allclose(results[0].state["w0"], results[1].state["w0"])


def test_chunk_outputs_are_averaged_per_track():
    configs = [ProbeConfig(False, 4, 8, 1e-3, 0.5, 0.0), ProbeConfig(False, 4, 8, 1e-3, 0.25, 0.0)]
    stack = StackedProbes(configs, input_size=5, num_outputs=2, seed=0, device="cpu")
    x = torch.randn(7, 5)
    track = torch.tensor([0, 0, 0, 1, 2, 2, 1])
    pooled = stack.track_outputs(x, track, 3)
    per_chunk = stack.forward(x).detach()
    assert pooled.shape == (2, 3, 2)
    torch.testing.assert_close(pooled[:, 0], per_chunk[:, :3].mean(1))
    torch.testing.assert_close(pooled[:, 1], per_chunk[:, [3, 6]].mean(1))
    torch.testing.assert_close(pooled[:, 2], per_chunk[:, 4:6].mean(1))
    state = stack.state_of(1)
    torch.testing.assert_close(track_outputs(state, x, track, 3), pooled[1])


def test_early_stopping_keeps_the_best_validation_epoch():
    # A high learning rate on a weak signal: validation accuracy peaks early, then wanders.
    data = make_data(SINGLE_LABEL, signal=0.6, sizes=(30, 30, 10), seed=3)
    config = ProbeConfig(False, 512, 16, 1e-2, 0.25, 0.0)
    settings = GridSettings(max_epochs=30, patience=4, seed=1, keep_states="all")
    (result,) = train_grid(data, SINGLE_LABEL, "myna_accuracy", ["a", "b", "c"], [config], settings)
    best_index = max(range(len(result.history)), key=lambda i: (result.history[i], -i))
    assert result.best_epoch == best_index + 1
    assert result.valid_score == max(result.history)
    assert result.epochs_run == min(settings.max_epochs, result.best_epoch + settings.patience)
    assert result.best_epoch < result.epochs_run  # the returned weights are not the last epoch's
    outputs = track_outputs(result.state, data.valid_x, data.valid_track, len(data.valid_y))
    rescored = primary_batched_score(SINGLE_LABEL, "myna_accuracy", outputs[None], data.valid_y, ["a", "b", "c"])
    assert float(rescored[0]) == pytest.approx(result.valid_score)


def test_select_best_uses_validation_and_breaks_ties_by_grid_order():
    data = make_data(SINGLE_LABEL)
    configs = probe_grid(fast=True)
    results = train_grid(data, SINGLE_LABEL, "myna_accuracy", ["a", "b", "c"], configs, GridSettings(max_epochs=4))
    best = select_best(results)
    assert best.valid_score == max(r.valid_score for r in results)
    assert best is next(r for r in results if r.valid_score == best.valid_score)
    kept = [r for r in results if r.state is not None]
    assert best in kept and len(kept) <= 2  # the best probe and the best linear probe keep their weights


def test_the_progress_bar_moves_as_probes_stop_and_shows_epochs():
    # issue 10: one group of 8 probes sat at 0/8 until the whole group had finished.
    data = make_data(SINGLE_LABEL, signal=0.6, sizes=(30, 30, 10), seed=3)
    configs = probe_grid(fast=True)
    events = []

    class Bar:
        def update(self, n):
            events.append(("update", n))

        def set_postfix_str(self, text):
            events.append(("postfix", text))

    settings = GridSettings(max_epochs=30, patience=2, seed=1)
    train_grid(data, SINGLE_LABEL, "myna_accuracy", ["a", "b", "c"], configs, settings, progress=Bar())
    updates = [n for kind, n in events if kind == "update"]
    assert sum(updates) == len(configs)
    first_update = next(i for i, (kind, n) in enumerate(events) if kind == "update" and n)
    assert first_update < len(events) - 1 or len(updates) > 1  # not one jump at the very end
    postfixes = [text for kind, text in events if kind == "postfix"]
    assert "epoch 1/30" in postfixes[0] and "probe(s) training" in postfixes[0]
