"""Helpers of the parity tests: copy one twin's weights into the other, compare trees of arrays.

Both twins store a Linear weight as (out, in); MLX's nn.Sequential names its children
"layers.0", torch's "0", so "critic.layers.0.weight" (MLX) is "critic.0.weight" (torch).
"""

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten


def mx_flat(tree):
    """[(dotted name, array)] of an MLX tree (parameters, gradients)."""
    return tree_flatten(tree)


def torch_name(mlx_name: str) -> str:
    return mlx_name.replace("layers.", "")


def torch_to_mlx(t_agent, m_agent):
    """Copy the torch Agent's weights into the MLX Agent (both store Linear weights as (out, in))."""
    t_params = {name: p.detach().numpy() for name, p in t_agent.named_parameters()}
    m_names = [name for name, _ in mx_flat(m_agent.parameters())]
    assert sorted(torch_name(n) for n in m_names) == sorted(t_params)
    m_agent.load_weights([(n, mx.array(t_params[torch_name(n)])) for n in m_names])


def assert_close(mlx_tree, torch_named, rtol=1e-5):
    """Every MLX array against the torch tensor of the same name, relative to the tensor's scale."""
    ours = {torch_name(name): np.array(a) for name, a in mx_flat(mlx_tree)}
    assert set(ours) == set(torch_named)
    for name, ref in torch_named.items():
        ref = ref.detach().numpy()
        np.testing.assert_allclose(ours[name], ref, rtol=rtol, atol=rtol * np.abs(ref).max(), err_msg=name)


def torch_params(module):
    """{name: float64 copy} of a torch module's parameters."""
    return {name: p.detach().double().numpy() for name, p in module.named_parameters()}


def mlx_params(module):
    """{torch name: float64 copy} of an MLX module's parameters."""
    return {torch_name(name): np.array(a).astype(np.float64) for name, a in mx_flat(module.parameters())}


def assert_steps_match(mlx_after, torch_after, exact_after, initial, rtol=1e-5):
    """Parameters after a few optimiser steps, given as {torch name: array}: MLX's, torch's float32
    ones, the float64 torch run's (`exact_after`) and the shared start (`initial`).

    MLX must be within rtol (relative to each tensor's scale) of the float64 result, or no further
    from it than torch's own float32 result: a gradient that cancels to ~0 leaves Adam's step to
    rounding in both frameworks. And the steps themselves must agree, not only the larger weights."""
    assert set(mlx_after) == set(torch_after) == set(exact_after)
    for name, exact in exact_after.items():
        scale, step_size = np.abs(exact).max(), np.abs(exact - initial[name]).max()
        torch_error = np.abs(torch_after[name] - exact).max() / scale
        mlx_error = np.abs(mlx_after[name] - exact).max() / scale
        assert mlx_error <= max(rtol, 3 * torch_error), (name, mlx_error, torch_error)
        assert step_size > 1e-6, f"{name} did not move: the steps test nothing"
        np.testing.assert_allclose(mlx_after[name] - initial[name], torch_after[name] - initial[name],
                                   atol=1e-3 * step_size, err_msg=name)


def torch_state_to_mlx(t_module, m_module):
    """torch_to_mlx for a module with buffers (an actor's action scale and bias): the whole
    state_dict, into the MLX module's parameters, where the buffers are frozen arrays of the same name."""
    t_state = {name: t.detach().numpy() for name, t in t_module.state_dict().items()}
    m_names = [name for name, _ in mx_flat(m_module.parameters())]
    assert sorted(torch_name(n) for n in m_names) == sorted(t_state)
    m_module.load_weights([(n, mx.array(t_state[torch_name(n)])) for n in m_names])


def mlx_trainable_params(module):
    """mlx_params without the frozen arrays (torch's buffers): what torch_params lists."""
    return {torch_name(name): np.array(a).astype(np.float64) for name, a in mx_flat(module.trainable_parameters())}
