"""Tests of myna_training.losses: InfoNCE and SogCLR against direct formulas and a transcription of libauc's
`GCLoss_v1`, float32 under bf16 autocast, 2-process = 1-process; and pre-training's weight-decay parameter groups."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from modeling_myna import MynaConfig, MynaForContrastivePretraining
from myna_training.losses import InfoNCELoss, SogCLRLoss


def tiny_config(variant="base"):
    return MynaConfig.from_variant(
        variant, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64,
        projection_dim=16,
    )


def direct_nt_xent(z1, z2, temperature):
    """NT-Xent written out anchor by anchor (SimCLR eq. 1)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z.shape[0]
    batch = n // 2
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / temperature) / denominator)
    return total / n


def test_infonce_equals_direct_formula():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    loss = InfoNCELoss(temperature=0.1)(z1, z2)
    assert loss.item() == pytest.approx(direct_nt_xent(z1, z2, 0.1), rel=1e-5)
    # Scale-invariant (cosine similarity) and symmetric in the views.
    assert InfoNCELoss(0.1)(3 * z1, z2).item() == pytest.approx(loss.item(), rel=1e-5)
    assert InfoNCELoss(0.1)(z2, z1).item() == pytest.approx(loss.item(), rel=1e-5)


def test_infonce_is_low_for_matching_views_and_high_for_swapped_ones():
    z = torch.eye(4)
    aligned = InfoNCELoss(0.1)(z, z).item()
    shuffled = InfoNCELoss(0.1)(z, z.roll(1, dims=0)).item()
    # Aligned: the positive has similarity 1, the 6 other views 0 -> -log(e^10 / (e^10 + 6)).
    assert aligned == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 6)), abs=1e-6)
    assert shuffled > 5.0


def sogclr_by_hand(z1, z2, index, u_before, temperature, gamma):
    """SogCLR for one process, anchor by anchor: new state and the loss value (float64), at libauc's scale."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n, batch = z.shape[0], z.shape[0] // 2
    u_views, per_anchor = [], []
    for i in range(n):
        positive = (i + batch) % n
        negatives = [k for k in range(n) if k not in (i, positive)]
        exps = [math.exp(float(z[i] @ z[k]) / temperature) for k in negatives]
        g = sum(exps) / len(negatives)
        u = (1 - gamma) * float(u_before[index[i % batch]]) + gamma * g
        u_views.append(u)
        weighted = sum(e / u * float(z[i] @ z[k]) for e, k in zip(exps, negatives)) / len(negatives)
        per_anchor.append(-float(z[i] @ z[positive]) + weighted)
    new_state = [(u_views[j] + u_views[j + batch]) / 2 for j in range(batch)]
    return new_state, sum(per_anchor) / batch  # both views' losses summed, averaged over the examples


def test_sogclr_state_update_and_loss_match_hand_computation():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    index = torch.tensor([7, 2, 9, 0])
    loss_fn = SogCLRLoss(dataset_size=10, temperature=0.1, gamma=0.9)
    loss_fn.u[0] = torch.linspace(1.0, 3.0, 10)  # a non-trivial previous state
    u_before = loss_fn.u[0].clone()
    loss = loss_fn(z1, z2, index=index)
    new_state, expected_loss = sogclr_by_hand(z1, z2, index, u_before, 0.1, 0.9)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(loss_fn.u[0, index], torch.tensor(new_state, dtype=torch.float32), rtol=1e-5, atol=0)
    untouched = torch.tensor([i for i in range(10) if i not in index.tolist()])
    torch.testing.assert_close(loss_fn.u[0, untouched], u_before[untouched])


def test_more_views_per_clip_give_every_anchor_its_other_views_as_positives():
    """--num_views 3: InfoNCE averages NT-Xent over an anchor's 2 positives (SupCon's outside form); SogCLR's
    negatives are the other clips' views, its state the mean of the 3 views' estimates; 2 views are unchanged."""
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 6, generator=generator) for _ in range(3)]
    z = F.normalize(torch.cat(views).double(), dim=1)
    n, batch, temperature, gamma = 12, 4, 0.1, 0.9
    clip = [i % batch for i in range(n)]
    expected, u_views, per_anchor = 0.0, [], []
    index = torch.tensor([3, 0, 5, 1])
    u_before = torch.linspace(1.0, 2.0, 6)
    for i in range(n):
        positives = [k for k in range(n) if k != i and clip[k] == clip[i]]
        negatives = [k for k in range(n) if clip[k] != clip[i]]
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n) if k != i)
        expected += sum(-float(z[i] @ z[p]) / temperature + math.log(denominator) for p in positives) / 2
        exps = [math.exp(float(z[i] @ z[k]) / temperature) for k in negatives]
        u = (1 - gamma) * float(u_before[index[clip[i]]]) + gamma * sum(exps) / len(negatives)
        u_views.append(u)
        weighted = sum(e / u * float(z[i] @ z[k]) for e, k in zip(exps, negatives)) / len(negatives)
        per_anchor.append(-sum(float(z[i] @ z[p]) for p in positives) / 2 + weighted)
    assert InfoNCELoss(temperature)(*views).item() == pytest.approx(expected / n, rel=1e-5)
    loss_fn = SogCLRLoss(dataset_size=6, temperature=temperature, gamma=gamma)
    loss_fn.u[0] = u_before
    loss = loss_fn(*views, index=index)
    assert loss.item() == pytest.approx(sum(per_anchor) / (batch * 3 / 2), rel=1e-5)
    new_state = [sum(u_views[j + v * batch] for v in range(3)) / 3 for j in range(batch)]
    torch.testing.assert_close(loss_fn.u[0, index], torch.tensor(new_state, dtype=torch.float32), rtol=1e-5, atol=0)
    # Two views: the same numbers as the two-view formula above.
    assert InfoNCELoss(temperature)(*views[:2]).item() == pytest.approx(
        direct_nt_xent(*views[:2], temperature), rel=1e-5
    )
    with pytest.raises(ValueError, match="two or more views"):
        InfoNCELoss(temperature)(views[0])


def test_sogclr_gradient_is_the_u_weighted_contrastive_gradient():
    # d loss / d s_ik = (-[k = p(i)] + exp(s_ik / T) / u_i / |negatives|) / B, u_i as updated this step: the gradient
    # of T log mean_k exp(s_ik / T) - s_ip (libauc's GCL) with the batch mean replaced by u_i, summed over the views.
    generator = torch.Generator().manual_seed(1)
    z1 = torch.nn.functional.normalize(torch.randn(3, 5, generator=generator), dim=1).requires_grad_()
    z2 = torch.nn.functional.normalize(torch.randn(3, 5, generator=generator), dim=1)
    loss_fn = SogCLRLoss(dataset_size=3, temperature=0.5, gamma=0.5)
    loss_fn.u[0] = torch.tensor([2.0, 0.5, 1.0])
    u_before = loss_fn.u[0].clone()
    loss_fn(z1, z2, index=torch.arange(3)).backward()

    z = torch.cat([z1.detach(), z2]).double()
    n, batch, t = 6, 3, 0.5
    similarity = z @ z.T
    grad_z = torch.zeros_like(z)
    for i in range(n):
        positive = (i + batch) % n
        negatives = [k for k in range(n) if k not in (i, positive)]
        g = sum(math.exp(similarity[i, k] / t) for k in negatives) / len(negatives)
        u = 0.5 * u_before[i % batch].item() + 0.5 * g
        for k in range(n):
            if k == i:
                continue
            coefficient = -1.0 if k == positive else math.exp(similarity[i, k] / t) / u / len(negatives)
            # s_ik = <z_i, z_k> for unit vectors; the gradient flows into both ends.
            grad_z[i] += coefficient / batch * z[k]
            grad_z[k] += coefficient / batch * z[i]
    # F.normalize of an already unit vector: project out the radial component.
    expected = grad_z[:batch] - (grad_z[:batch] * z[:batch]).sum(1, keepdim=True) * z[:batch]
    torch.testing.assert_close(z1.grad.double(), expected, rtol=1e-4, atol=1e-6)


def libauc_gcloss_v1(u, hidden1, hidden2, index, tau=0.1, gamma=0.9, eps=1e-8, first_epoch=True):
    """A transcription of libauc 1.4.0 `GCLoss_v1.forward` (libauc/losses/contrastive.py; constant gamma schedule,
    no iSogCLR, one process): returns the loss and writes the new state into `u` of shape `(N, 1)`, as libauc does.
    `first_epoch` is libauc's `self.gamma > self.gamma_min` (true until `adjust_gamma` is called with an epoch > 0)."""
    hidden1, hidden2 = F.normalize(hidden1, p=2, dim=1), F.normalize(hidden2, p=2, dim=1)
    batch = hidden1.shape[0]
    labels = F.one_hot(torch.arange(batch), 2 * batch)
    self_mask = F.one_hot(torch.arange(batch), batch)
    large = 1e9
    # Rows: anchors of one view; columns: [the other view's examples, this view's examples].
    logits1 = torch.cat([hidden1 @ hidden2.T, hidden1 @ hidden1.T - self_mask * large], dim=1)
    logits2 = torch.cat([hidden2 @ hidden1.T, hidden2 @ hidden2.T - self_mask * large], dim=1)
    negative = 1 - labels
    exp1, exp2 = torch.exp(logits1 / tau) * negative, torch.exp(logits2 / tau) * negative
    step_gamma = (1.0 if u[index].sum() == 0 else gamma) if first_epoch else gamma
    count = 2 * (batch - 1)
    u1 = (1 - step_gamma) * u[index] + step_gamma * exp1.sum(dim=1, keepdim=True) / count
    u2 = (1 - step_gamma) * u[index] + step_gamma * exp2.sum(dim=1, keepdim=True) / count
    u[index] = (u1.detach() + u2.detach()) / 2
    weights1, weights2 = (exp1 / u1.clamp(min=eps)).detach(), (exp2 / u2.clamp(min=eps)).detach()

    def view_loss(logits, weights):
        centred = logits - (weights * logits).sum(dim=1, keepdim=True) / count
        return -(labels * centred).sum(dim=1)

    return (view_loss(logits1, weights1) + view_loss(logits2, weights2)).mean()


def test_sogclr_matches_libauc_gcloss_v1_over_two_visits():
    generator = torch.Generator().manual_seed(3)
    batch, dim, size = 6, 8, 20
    index = torch.tensor([4, 11, 0, 19, 7, 2])
    loss_fn = SogCLRLoss(dataset_size=size, temperature=0.1, gamma=0.9)
    libauc_u = torch.zeros(size, 1)
    for visit in range(2):  # the first visit sets u = g, the second moves it with gamma
        z1, z2 = torch.randn(batch, dim, generator=generator), torch.randn(batch, dim, generator=generator)
        ours = [z1.clone().requires_grad_(), z2.clone().requires_grad_()]
        theirs = [z1.clone().requires_grad_(), z2.clone().requires_grad_()]
        u_before = libauc_u.clone()
        loss = loss_fn(*ours, index=index)
        expected = libauc_gcloss_v1(libauc_u, *theirs, index)
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss_fn.u[0], libauc_u[:, 0], rtol=1e-6, atol=0)
        for got, want in zip(ours, theirs):
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-7)
        assert torch.all((u_before[index] == 0) == (visit == 0))
    # Second visit: u = 0.1 u_first + 0.9 g, not g (the state moved, and not all the way).
    assert not torch.allclose(loss_fn.u[0, index], u_before[index, 0])


def test_sogclr_first_visit_rule_is_libaucs():
    generator = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    fresh = torch.tensor([0, 1, 2, 3])
    g = torch.tensor(sogclr_by_hand(z1, z2, fresh, torch.zeros(8), 0.1, 1.0)[0])  # the views' mean g

    # First visit of the whole batch: u = g (libauc's gamma = 1), not 0.9 g.
    loss_fn = SogCLRLoss(dataset_size=8)
    loss_fn(z1, z2, index=fresh)
    torch.testing.assert_close(loss_fn.u[0, fresh], g.float(), rtol=1e-5, atol=0)

    # The check is per batch: one example already seen, so the fresh ones get 0.9 g (libauc's `u[index].sum()`).
    loss_fn = SogCLRLoss(dataset_size=8)
    loss_fn.u[0, 2] = 1.5
    loss_fn(z1, z2, index=fresh)
    expected = 0.9 * g + 0.1 * torch.tensor([0.0, 0.0, 1.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(loss_fn.u[0, fresh], expected.float(), rtol=1e-5, atol=0)

    # From epoch 1 on (libauc's adjust_gamma), gamma applies even to unseen examples; set_epoch(0) restores the check.
    loss_fn = SogCLRLoss(dataset_size=8)
    loss_fn.set_epoch(1)
    loss_fn(z1, z2, index=fresh)
    torch.testing.assert_close(loss_fn.u[0, fresh], (0.9 * g).float(), rtol=1e-5, atol=0)
    loss_fn.u.zero_()
    loss_fn.set_epoch(0)
    loss_fn(z1, z2, index=fresh)
    torch.testing.assert_close(loss_fn.u[0, fresh], g.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("loss_name", ["infonce", "sogclr"])
def test_losses_run_in_float32_under_bf16_autocast(loss_name):
    generator = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(6, 16, generator=generator), torch.randn(6, 16, generator=generator)
    index = torch.arange(6)

    def run(autocast: bool, inputs_dtype=torch.float32):
        loss_fn = InfoNCELoss() if loss_name == "infonce" else SogCLRLoss(dataset_size=6)
        a, b = (z.detach().clone().to(inputs_dtype).requires_grad_() for z in (z1, z2))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            similarity, _, _ = loss_fn.similarities(a, b)
            losses = [loss_fn(a, b, index=index) for _ in range(2)]  # SogCLR: first and second visit
        sum(losses).backward()
        return similarity, torch.stack(losses), a.grad, loss_fn.state_dict().get("u")

    similarity, losses, grad, state = run(autocast=True)
    assert similarity.dtype == torch.float32 and losses.dtype == torch.float32
    reference = run(autocast=False)
    for got, want in zip((similarity, losses, grad, state), reference):
        if want is not None:
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    # bfloat16 features (a bf16 model's projections) are cast up, not computed in bfloat16.
    bf16_similarity, bf16_losses, _, bf16_state = run(autocast=True, inputs_dtype=torch.bfloat16)
    assert bf16_similarity.dtype == torch.float32 and bf16_losses.dtype == torch.float32
    assert bf16_state is None or bf16_state.dtype == torch.float32


def test_sogclr_keeps_one_state_per_tokenizer_and_validates_inputs():
    loss_fn = SogCLRLoss(dataset_size=4, num_tokenizers=2)
    z = torch.randn(2, 3)
    loss_fn(z, z + 0.1, index=torch.tensor([0, 1]), tokenizer=1)
    assert torch.all(loss_fn.u[0] == 0) and torch.all(loss_fn.u[1, :2] > 0)
    assert "u" in loss_fn.state_dict()
    with pytest.raises(ValueError, match="needs `index`"):
        loss_fn(z, z)
    with pytest.raises(ValueError, match=r"index must hold"):
        loss_fn(z, z, index=torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="num_tokenizers=2"):
        SogCLRLoss(4)(z, z, index=torch.tensor([0, 1]), tokenizer=1)
    with pytest.raises(ValueError, match="same clips"):
        InfoNCELoss()(z, torch.randn(3, 3))


def test_losses_plug_into_the_model_and_hybrid_averages_per_tokenizer_losses():
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(tiny_config("hybrid"))
    views = [torch.rand(3, 128, 96) * 100, torch.rand(3, 128, 96) * 100]
    noise = [torch.rand(6, 48), torch.rand(6, 48)]
    outputs = model(views=views, noise=noise, loss_fn=InfoNCELoss())
    infonce = InfoNCELoss()
    per_tokenizer = [infonce(*outputs.projections[:2]), infonce(*outputs.projections[2:])]
    assert outputs.loss.item() == pytest.approx(torch.stack(per_tokenizer).mean().item(), rel=1e-6)

    sogclr = SogCLRLoss(dataset_size=5, num_tokenizers=2)
    model(views=views, noise=noise, loss_fn=sogclr, index=torch.tensor([0, 2, 4]))
    assert not torch.equal(sogclr.u[0], sogclr.u[1])  # separate state per tokenizer
    assert torch.equal(sogclr.u[:, 1], torch.zeros(2)) and (sogclr.u[:, [0, 2, 4]] != 0).all()


def test_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from distributed_pretrain_check import CASES, compute

    out = tmp_path / "two_processes.pt"
    script = os.path.join(os.path.dirname(__file__), "distributed_pretrain_check.py")
    # Two gloo processes under torchrun, the launcher `accelerate launch --multi_gpu` uses; `accelerate launch --cpu
    # --num_processes 2` starts one process unless MPI is set up.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    two_processes = torch.load(out, weights_only=True)
    for loss, variant in CASES:
        one, two = compute(loss, variant), two_processes[f"{loss}-{variant}"]
        torch.testing.assert_close(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
        assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
        for name, expected in one["grads"].items():
            # Float sums run in another order across processes and thread counts; a missing cross-rank term would
            # be off by O(1) of the gradient's scale.
            scale = expected.abs().max().item()
            torch.testing.assert_close(two["grads"][name], expected, rtol=1e-3, atol=1e-5 * scale, msg=name)
        if loss == "sogclr":
            torch.testing.assert_close(two["u"], one["u"], rtol=1e-5, atol=0)
            assert (one["u"] > 0).sum() == 2 * 8  # both tokenizers, every example of the batch


def test_weight_decay_scope_picks_the_decayed_parameters():
    from myna_training.arguments import PretrainingArguments
    from myna_training.pretrain import parameter_groups

    model = MynaForContrastivePretraining(tiny_config())
    params = [p for p in model.parameters() if p.requires_grad]
    matrices, vectors = parameter_groups(model, 1e-5)  # the default scope: nanoGPT's, matrices only
    assert matrices["weight_decay"] == 1e-5 and vectors["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in matrices["params"]) and all(p.dim() < 2 for p in vectors["params"])
    assert len(matrices["params"]) + len(vectors["params"]) == len(params) and vectors["params"]
    (everything,) = parameter_groups(model, 1e-5, "all")  # the reference: Adam(model.parameters(), weight_decay)
    assert everything["weight_decay"] == 1e-5 and len(everything["params"]) == len(params)
    assert {id(p) for p in everything["params"]} == {id(p) for p in params}
    with pytest.raises(ValueError, match="'matrices' or 'all'"):
        parameter_groups(model, 1e-5, "biases")
    assert PretrainingArguments().weight_decay_scope == "matrices"
    with pytest.raises(ValueError, match="weight_decay_scope"):
        PretrainingArguments(weight_decay_scope="everything")
