"""LaProp optimiser: hand-computed updates, AGC, bias correction, warm-up, state round trip."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from reverie.errors import ConfigError
from reverie.nn.optim import Adam, LaProp, global_norm


def one_step(theta: list[float], grad: list[float], **kwargs) -> torch.Tensor:
    """Parameters after a single LaProp step from `theta` with gradient `grad`."""
    p = torch.nn.Parameter(torch.tensor(theta))
    opt = LaProp([p], **kwargs)
    p.grad = torch.tensor(grad)
    opt.step()
    return p.detach()


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_first_step_without_agc_is_sign_times_lr():
    # θ = [1, 2], g = [0.5, -2], lr 0.1, default betas, eps 1e-20, no AGC, no warm-up.
    # t=1: v = 0.001·g², v̂ = v / (1 − 0.999) = g², √v̂ = |g| = [0.5, 2]
    #      u = g / |g| = [1, -1];  m = 0.1·u,  m̂ = m / (1 − 0.9) = [1, -1]
    #      θ = [1 − 0.1, 2 + 0.1] = [0.9, 2.1]
    close(one_step([1.0, 2.0], [0.5, -2.0], lr=0.1, agc=0.0, warmup=0), [0.9, 2.1])


def test_eps_is_added_after_the_square_root():
    # Same as above with eps = 1: u = g / (|g| + 1) = [0.5/1.5, -2/3] = [1/3, -2/3]
    # θ = [1 − 0.1/3, 2 + 0.2/3] = [0.9666667, 2.0666667]
    # (eps inside the root would give u = [0.5/√1.25, -2/√5] = [0.4472, -0.8944] instead.)
    close(
        one_step([1.0, 2.0], [0.5, -2.0], lr=0.1, eps=1.0, agc=0.0, warmup=0),
        [1 - 0.1 / 3, 2 + 0.2 / 3],
    )


def test_agc_clips_gradient_relative_to_parameter_norm():
    # θ = [3, 4], ‖θ‖ = 5, agc 0.3 → limit 0.3·5 = 1.5.  g = [6, 8], ‖g‖ = 10 > 1.5:
    # g' = g / max(1, 10 / 1.5) = g · 0.15 = [0.9, 1.2]
    # eps = 1 makes the size of g' visible: u = g' / (|g'| + 1) = [0.9/1.9, 1.2/2.2]
    #   = [0.4736842, 0.5454545];  m̂ = u;  lr 1 → θ = [2.5263158, 3.4545455]
    # (unclipped: u = [6/7, 8/9] → θ = [2.1428571, 3.1111111])
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LaProp([p], lr=1.0, eps=1.0, agc=0.3, warmup=0)
    p.grad = torch.tensor([6.0, 8.0])
    opt.step()
    close(p.detach(), [3 - 0.9 / 1.9, 4 - 1.2 / 2.2])
    close(p.grad, [6.0, 8.0])  # clipping works on a copy: the stored gradient is untouched


def test_agc_leaves_small_gradients_alone():
    # θ = [3, 4] (limit 1.5), g = [0.6, 0.8], ‖g‖ = 1 ≤ 1.5 → g unchanged.
    # eps = 1: u = [0.6/1.6, 0.8/1.8] = [0.375, 0.4444444] → θ = [2.625, 3.5555556]
    close(
        one_step([3.0, 4.0], [0.6, 0.8], lr=1.0, eps=1.0, agc=0.3, warmup=0),
        [3 - 0.375, 4 - 0.8 / 1.8],
    )


def test_agc_uses_pmin_for_zero_parameters():
    # θ = [0, 0]: limit = 0.3·max(1e-3, 0) = 3e-4.  g = [3e-3, 4e-3], ‖g‖ = 5e-3:
    # g' = g / (5e-3 / 3e-4) = g · 0.06 = [1.8e-4, 2.4e-4]
    # eps = 1e-4: u = [1.8e-4/2.8e-4, 2.4e-4/3.4e-4] = [0.6428571, 0.7058824] → θ = −u
    close(
        one_step([0.0, 0.0], [3e-3, 4e-3], lr=1.0, eps=1e-4, agc=0.3, agc_pmin=1e-3, warmup=0),
        [-1.8 / 2.8, -2.4 / 3.4],
    )


def test_two_steps_apply_both_bias_corrections():
    # β1 = β2 = 0.5, eps 0, lr 1, no AGC / warm-up, θ = [0], g1 = 1, g2 = 3.
    # t=1: v = 0.5·1 = 0.5,        v̂ = 0.5 / (1 − 0.5) = 1,   u = 1 / 1 = 1
    #      m = 0.5·1 = 0.5,        m̂ = 0.5 / 0.5 = 1,         θ = 0 − 1 = −1
    # t=2: v = 0.5·0.5 + 0.5·9 = 4.75,   v̂ = 4.75 / (1 − 0.25) = 6.3333333, √v̂ = 2.5166115
    #      u = 3 / 2.5166115 = 1.1920791
    #      m = 0.5·0.5 + 0.5·1.1920791 = 0.8460396,   m̂ = 0.8460396 / 0.75 = 1.1280527
    #      θ = −1 − 1.1280527 = −2.1280527
    p = torch.nn.Parameter(torch.zeros(1))
    opt = LaProp([p], lr=1.0, betas=(0.5, 0.5), eps=0.0, agc=0.0, warmup=0)
    p.grad = torch.tensor([1.0])
    opt.step()
    close(p.detach(), [-1.0])
    p.grad = torch.tensor([3.0])
    opt.step()
    close(p.detach(), [-2.1280527])
    close(opt.state[p]["exp_avg_sq"], [4.75])
    close(opt.state[p]["exp_avg"], [0.8460396])


def test_warmup_scales_the_learning_rate_linearly():
    # Constant g = 2 gives v̂ = 4 and m̂ = 1 at every step, so each update is exactly lr_k. The
    # official schedule counts updates from k = 0 (optax linear_schedule at the count before it
    # increments): lr 0.4, warmup 4 → lr_k = 0.4·min(1, k/4) = 0, 0.1, 0.2, 0.3, 0.4, 0.4 for the
    # updates k = 0..5, i.e. 0, 1/4, 2/4, 3/4, 1, 1 times the full-lr step.
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LaProp([p], lr=0.4, agc=0.0, warmup=4)
    expected = [1.0, 0.9, 0.7, 0.4, 0.0, -0.4]
    for value in expected:
        p.grad = torch.tensor([2.0])
        opt.step()
        close(p.detach(), [value])
    assert opt.state[p]["step"].item() == 6


def test_first_warmup_update_moves_only_the_moments():
    # Update k = 0 has lr 0: θ stays, while m, v and t take the gradient as without warm-up.
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = LaProp([p], lr=0.1, agc=0.0, warmup=4)
    p.grad = torch.tensor([0.5, -2.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, 2.0]))
    state = opt.state[p]
    assert state["step"].item() == 1
    close(state["exp_avg_sq"], [0.001 * 0.25, 0.001 * 4.0])  # (1 − β2)·g²
    close(state["exp_avg"], [0.1, -0.1])  # (1 − β1)·g/√v̂ = 0.1·sign(g)


def test_warmup_steps_are_the_full_lr_steps_scaled_by_k_over_warmup():
    # With AGC off the moments do not depend on θ or lr, so an optimiser with warm-up sees the
    # same m̂ as one without and each of its updates is the full-lr update times min(1, k/4).
    torch.manual_seed(0)
    grads = [torch.randn(5) for _ in range(6)]
    warm = torch.nn.Parameter(torch.zeros(5))
    full = torch.nn.Parameter(torch.zeros(5))
    warm_opt = LaProp([warm], lr=1e-2, agc=0.0, warmup=4)
    full_opt = LaProp([full], lr=1e-2, agc=0.0, warmup=0)
    for k, (g, scale) in enumerate(zip(grads, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])):
        before_warm, before_full = warm.detach().clone(), full.detach().clone()
        warm.grad, full.grad = g.clone(), g.clone()
        warm_opt.step()
        full_opt.step()
        torch.testing.assert_close(warm.detach() - before_warm, scale * (full.detach() - before_full),
                                   rtol=1e-5, atol=1e-8, msg=f"update k={k}")
        torch.testing.assert_close(warm_opt.state[warm]["exp_avg"], full_opt.state[full]["exp_avg"])


def test_param_groups_take_their_own_learning_rate():
    # Sign-like first step (see first test): each parameter moves by its group's lr.
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LaProp([{"params": [a]}, {"params": [b], "lr": 0.3}], lr=0.1, agc=0.0, warmup=0)
    a.grad = torch.tensor([5.0])
    b.grad = torch.tensor([5.0])
    opt.step()
    close(a.detach(), [0.9])
    close(b.detach(), [0.7])


def test_parameter_without_grad_is_skipped():
    used = torch.nn.Parameter(torch.tensor([1.0]))
    unused = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LaProp([used, unused], lr=0.1, agc=0.0, warmup=0)
    used.grad = torch.tensor([1.0])
    opt.step()
    close(used.detach(), [0.9])
    close(unused.detach(), [1.0])
    assert unused not in opt.state
    assert opt.state[used]["step"].item() == 1


def _model_and_grads(seed: int) -> tuple[torch.nn.Module, list[list[torch.Tensor]]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(5)]
    return model, grads


def _step_with(model: torch.nn.Module, opt: LaProp, grads: list[torch.Tensor]) -> None:
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    opt.step()


def test_state_dict_round_trip_continues_identically():
    model, grads = _model_and_grads(0)
    opt = LaProp(model.parameters(), lr=1e-2, warmup=10)
    for g in grads[:3]:
        _step_with(model, opt, g)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cpu")

    resumed_model = copy.deepcopy(model)
    resumed_model.load_state_dict(saved["model"])
    resumed = LaProp(resumed_model.parameters(), lr=123.0, warmup=1)  # groups come from the save
    resumed.load_state_dict(saved["opt"])
    assert resumed.param_groups[0]["lr"] == 1e-2
    assert resumed.param_groups[0]["warmup"] == 10

    fresh_model = copy.deepcopy(model)
    fresh = LaProp(fresh_model.parameters(), lr=1e-2, warmup=10)

    for g in grads[3:]:
        _step_with(model, opt, g)
        _step_with(resumed_model, resumed, g)
        _step_with(fresh_model, fresh, g)
    for p, q, r in zip(model.parameters(), resumed_model.parameters(), fresh_model.parameters()):
        assert torch.equal(p, q)
        assert not torch.equal(p, r)  # a fresh optimiser (t = 1) would have stepped differently
    first = resumed.state[next(resumed_model.parameters())]
    assert first["step"].dtype == torch.float32 and first["step"].item() == 5


@pytest.mark.parametrize("kind", ["laprop", "adam"])
def test_loading_an_in_memory_state_dict_copies_it_so_the_two_optimisers_step_apart(kind):
    """torch's load keeps tensors that need no cast: without a copy both optimisers would share (and
    both advance) the step counters and moments."""
    make = (lambda params: LaProp(params, lr=1e-2)) if kind == "laprop" else (lambda params: Adam(params, lr=1e-2))
    model, grads = _model_and_grads(0)
    opt = make(model.parameters())
    _step_with(model, opt, grads[0])
    twin_model = copy.deepcopy(model)
    twin = make(twin_model.parameters())
    twin.load_state_dict(opt.state_dict())
    _step_with(model, opt, grads[1])  # only the first one steps
    first, second = opt.state[next(model.parameters())], twin.state[next(twin_model.parameters())]
    assert first["step"].item() == 2 and second["step"].item() == 1
    assert not torch.equal(first["exp_avg_sq"], second["exp_avg_sq"])
    _step_with(twin_model, twin, grads[1])
    for p, q in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(p, q)


def test_compiled_step_matches_eager_without_graph_breaks():
    model, grads = _model_and_grads(1)
    compiled_model = copy.deepcopy(model)
    opt = LaProp(model.parameters(), lr=1e-2, warmup=3)
    compiled_opt = LaProp(compiled_model.parameters(), lr=1e-2, warmup=3)

    @torch.compile(backend="eager", fullgraph=True)  # fullgraph: any graph break is an error
    def compiled_step() -> None:
        compiled_opt.step()

    for g in grads[:3]:
        _step_with(model, opt, g)
        for p, gp in zip(compiled_model.parameters(), g):
            p.grad = gp.clone()
        compiled_step()
    for p, q in zip(model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(p, q)


def test_minimises_a_quadratic_loss_on_a_module():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    inputs = torch.randn(64, 4)  # (N, 4)
    targets = inputs @ torch.tensor([[0.5], [-1.0], [2.0], [0.3]]) + 0.7  # (N, 1)
    opt = LaProp(model.parameters(), lr=3e-2, warmup=10)

    def loss_fn() -> torch.Tensor:
        opt.zero_grad()
        loss = (model(inputs) - targets).pow(2).mean()
        loss.backward()
        return loss

    initial = loss_fn().item()
    for _ in range(300):
        opt.step(loss_fn)
    final = (model(inputs) - targets).pow(2).mean().item()
    assert final < 0.01 * initial


def test_global_norm_skips_none():
    # √(3² + 4² + 12²) = √169 = 13
    norm = global_norm([torch.tensor([3.0, 4.0]), None, torch.tensor([[12.0]])])
    assert norm.shape == ()
    assert norm.item() == pytest.approx(13.0)
    assert global_norm([None]).item() == 0.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"lr": -1.0}, "optim.lr"),
        ({"betas": (1.0, 0.999)}, "optim.beta1"),
        ({"betas": (0.9, -0.1)}, "optim.beta2"),
        ({"eps": -1e-8}, "optim.eps"),
        ({"agc": -0.3}, "optim.agc"),
        ({"agc_pmin": 0.0}, "optim.agc_pmin"),
        ({"warmup": -1}, "optim.warmup"),
    ],
)
def test_bad_hyperparameters_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        LaProp([torch.nn.Parameter(torch.zeros(1))], **kwargs)
