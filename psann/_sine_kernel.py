"""The sine activation's computation: a hand-written autograd Function, and the plain formula.

Per neuron (broadcast along the feature dimension)::

    A, f, d = clamp(softplus(raw) + (0, 1e-6, 0))        then f, d scaled by w0 when one is given
    E = exp(log A - d g(z))                               (E = A for decay mode "none")
    y = E sin(f z)

    dy/dz     = E (f cos(f z) - d g'(z) sin(f z))         g' = sign(z) ("abs") or [z > 0] ("relu")
    dy/dlog A = y        dy/df = z E cos(f z)             dy/dd = -g(z) y = -g'(z) z y

g' is 0 at z = 0, as autograd has it for abs and relu. Folding w0 into f and d computes
``sine(w0 * z)`` exactly (g is positively homogeneous, w0 > 0) without a full-size multiply.

Eagerly, autograd's version of this formula costs 6 full-size ops forward and about 19 backward
(3 of them reductions), plus a node for each step of the parameter mapping. ``SineFunction`` keeps
what the backward needs from the forward (the sine's argument, the sine, the envelope) and runs the
backward as 10 elementwise ops and 3 reductions ("abs", "relu"; "none": 5 and 2), the parameter
gradients through one small chain. Measured on one CPU thread (docs/benchmarks.md, 2026-12-02): a
training step 8-13% faster at batch 1024, the same at batch 128, where each op's dispatch rather
than its arithmetic is the cost and the Python Function's own overhead takes what the fewer ops
save. Under ``torch.compile`` the plain formula is used instead: inductor fuses it into one kernel
each way and chooses what to save and what to recompute, which measured as fast as compiling the
Function (and faster than compiling its in-place eager form).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# (low, high) clamps for the rows (amplitude, frequency, decay); None on either side = open.
Bounds = tuple[Optional[tuple[Optional[float], Optional[float]]], ...]

NO_BOUNDS: Bounds = (None, None, None)
_FREQUENCY_EPS = 1e-6
_LOG_FLOOR = 1e-30  # keeps log A finite when bounds pin A at 0


def sine_activation(
    z: torch.Tensor,
    raw_amplitude: torch.Tensor,
    raw_frequency: torch.Tensor,
    raw_decay: torch.Tensor,
    *,
    decay_mode: str,
    feature_dim: int,
    bounds: Bounds = NO_BOUNDS,
    w0: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The sine activation of ``w0 * z`` (w0 a 0-d tensor > 0; None means 1).

    The raw parameters are the pre-softplus vectors of the feature dimension's size.
    """
    dim = feature_dim if feature_dim >= 0 else z.dim() + feature_dim
    if torch.compiler.is_compiling():
        return _plain(z, raw_amplitude, raw_frequency, raw_decay, w0, decay_mode, dim, bounds)
    return SineFunction.apply(z, raw_amplitude, raw_frequency, raw_decay, w0, decay_mode, dim, bounds)


def _plain(z, raw_amplitude, raw_frequency, raw_decay, w0, decay_mode: str, dim: int, bounds: Bounds):
    """The formula in plain autograd ops (what torch.compile traces)."""
    rows = [F.softplus(raw_amplitude), F.softplus(raw_frequency) + _FREQUENCY_EPS, F.softplus(raw_decay)]
    for row, pair in enumerate(bounds):
        if pair is not None:
            rows[row] = rows[row].clamp(min=pair[0], max=pair[1])
    if w0 is not None:
        rows[1], rows[2] = rows[1] * w0, rows[2] * w0
    shape = (-1,) + (1,) * (z.dim() - 1 - dim)
    amplitude, frequency, decay = (row.view(shape) for row in rows)
    sine = torch.sin(z * frequency)
    if decay_mode == "none":
        return amplitude * sine
    g = z.abs() if decay_mode == "abs" else torch.relu(z)
    return sine * torch.exp(torch.addcmul(torch.log(amplitude.clamp_min(_LOG_FLOOR)), g, decay, value=-1.0))


def _clamp_rows(params: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """Clamp the (3, F) rows in place; returns where each value was inside its bounds.

    Autograd's clamp passes the gradient where low <= value <= high (both ends inclusive), so the
    mask reproduces it. The bounds stay Python numbers: no host-to-device copy.
    """
    inside = torch.ones_like(params, dtype=torch.bool)
    for row, pair in enumerate(bounds):
        if pair is None:
            continue
        low, high = pair
        value = params[row]
        if low is not None:
            inside[row] &= value >= low
        if high is not None:
            inside[row] &= value <= high
        value.clamp_(min=low, max=high)
    return inside


class SineFunction(torch.autograd.Function):
    """``y = A exp(-d g(w0 z)) sin(f w0 z)`` with a hand-written backward.

    Inputs: z (any shape); the raw amplitude, frequency and decay vectors; an optional 0-d w0
    tensor (> 0); and the constants decay_mode, the feature dimension (non-negative) and the
    bounds. Computes in the promoted dtype of z and the parameters (float32 for float16/bfloat16
    activations under autocast, as the plain formula does) and returns z's gradient in z's own
    dtype. Under ``create_graph=True`` (double backward, e.g. a loss on dy/dx) it falls back to
    autograd on the plain formula: correct, not fast.
    """

    @staticmethod
    def forward(ctx, z, raw_amplitude, raw_frequency, raw_decay, w0, decay_mode: str, dim: int, bounds: Bounds):
        input_dtype = z.dtype
        raw = torch.stack((raw_amplitude, raw_frequency, raw_decay))
        if raw.dtype != z.dtype:
            dtype = torch.promote_types(z.dtype, raw.dtype)
            z, raw = z.to(dtype), raw.to(dtype)
        params = F.softplus(raw)
        if dim != z.dim() - 1:  # rows that broadcast against z along dim
            params = params.view((3, -1) + (1,) * (z.dim() - 1 - dim))
        amplitude, frequency, decay = params.unbind(0)  # views: the in-place edits below show
        frequency.add_(_FREQUENCY_EPS)
        inside = None if bounds == NO_BOUNDS else _clamp_rows(params, bounds)
        if w0 is not None:
            params[1:].mul_(w0)
        argument = z * frequency
        sine = torch.sin(argument)
        if decay_mode == "none":
            g, envelope = None, amplitude
        else:
            amplitude = amplitude.clamp_min(_LOG_FLOOR)
            g = z.abs() if decay_mode == "abs" else torch.relu(z)
            envelope = torch.addcmul(amplitude.log(), g, decay, value=-1.0).exp_()
        if any(ctx.needs_input_grad):
            g = g if decay_mode == "relu" else None  # "abs" takes sign(z): no need to keep |z|
            ctx.save_for_backward(
                z, g, argument, sine, envelope, amplitude, frequency, decay, raw, w0, inside,
                raw_amplitude, raw_frequency, raw_decay,  # for create_graph=True only
            )
            ctx.decay_mode, ctx.dim, ctx.bounds, ctx.input_dtype = decay_mode, dim, bounds, input_dtype
        return sine * envelope

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            return _backward_with_graph(ctx, grad_output)
        return _backward(ctx, grad_output)


def _backward(ctx, grad_output):
    """SineFunction's gradients of z, and of the raw amplitude, frequency and decay."""
    z, g, argument, sine, envelope, amplitude, frequency, decay, raw, w0, inside, *_ = ctx.saved_tensors
    mode = ctx.decay_mode
    needs_z, needs_a, needs_f, needs_d = ctx.needs_input_grad[:4]
    needs_params = needs_a or needs_f or (needs_d and mode != "none")
    if grad_output.dtype != z.dtype:
        grad_output = grad_output.to(z.dtype)
    reduce_dims = 0 if ctx.dim == 1 and z.dim() == 2 else [i for i in range(z.dim()) if i != ctx.dim]
    v = torch.cos(argument)
    if mode == "none":  # E = A, per feature
        v.mul_(grad_output)  # go cos(f z)
        grad_z = v * (amplitude * frequency) if needs_z else None
        if needs_params:  # dL/dA, and dL/df / A
            sums = torch.stack(((grad_output * sine).sum(reduce_dims), v.mul_(z).sum(reduce_dims)))
    else:
        u = grad_output * envelope
        v.mul_(u)  # go E cos(f z)
        u.mul_(sine)  # go y = dL/dlog A
        grad_z = v * frequency if needs_z else None
        # go y g'(z), with g' = sign(z) or [z > 0] = sign(relu(z)): 0 at z = 0 as autograd has it
        ug = torch.sign(z if mode == "abs" else g).mul_(u)
        if needs_z:
            grad_z.addcmul_(ug, decay, value=-1.0)
        if needs_params:  # dL/dlog A, dL/df and -dL/dd (go y g'(z) z = go y g(z))
            sums = torch.stack((u.sum(reduce_dims), v.mul_(z).sum(reduce_dims), ug.mul_(z).sum(reduce_dims)))
    if grad_z is not None and grad_z.dtype != ctx.input_dtype:
        grad_z = grad_z.to(ctx.input_dtype)
    if not needs_params:
        return grad_z, None, None, None, None, None, None, None
    # Back through the mapping: softplus, the clamps, the w0 scale, log A (A itself for "none").
    grads = sums.mul_(torch.sigmoid(raw if len(sums) == 3 else raw[:2]))
    if inside is not None:
        grads.mul_(inside.view(3, -1)[: len(sums)])
    if w0 is not None:
        grads[1:].mul_(w0)
    grad_a, grad_f, *grad_d = grads.unbind(0)
    if mode == "none":
        grad_f.mul_(amplitude.view(-1))
    else:
        grad_a.div_(amplitude.view(-1))
        grad_d[0].neg_()
    return (
        grad_z,
        grad_a if needs_a else None,
        grad_f if needs_f else None,
        grad_d[0] if needs_d and mode != "none" else None,
        None,
        None,
        None,
        None,
    )


def _backward_with_graph(ctx, grad_output):
    """The gradients under ``create_graph=True``, differentiable again (inputs of PINN-style losses).

    Rare, so not optimised: the plain formula is recomputed from the saved inputs (which keep their
    place in the graph) and differentiated by autograd.
    """
    saved = ctx.saved_tensors
    z, w0, raw_rows = saved[0], saved[9], saved[11:]
    needs = ctx.needs_input_grad[:4]
    output = _plain(z, *raw_rows, w0, ctx.decay_mode, ctx.dim, ctx.bounds)
    wanted = [tensor for tensor, need in zip((z, *raw_rows), needs) if need]
    grads = iter(torch.autograd.grad(output, wanted, grad_output, create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in needs) + (None, None, None, None)
