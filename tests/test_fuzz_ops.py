"""Property-based fuzzing of the torch.ops.fastwhisper ops: devices (meta included), dtypes, strides and
zero-size tensors, starting from each op's sample inputs (op_samples.py).

The property: an op either gives its float64 reference's result (or, for the ops that write their inputs,
the same writes as on the plain samples) or raises a clear error (RuntimeError / ValueError / TypeError with a
message; for a strided layout, one that says the op needs contiguous inputs); never another exception, and
never a result when its tensors sit on different devices (a meta tensor among CPU tensors included: ATen
raises there, and so must the ops, before dispatch picks the fake).

Budgets: HYPOTHESIS_PROFILE=ci (the default, bounded for CI) or HYPOTHESIS_PROFILE=long (the larger run).
"""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DEVICES, rel_err
from op_samples import OPS, REFERENCES, reference, sample_inputs, tolerance

EXAMPLES = settings().max_examples

CLEAR = (RuntimeError, ValueError, TypeError)
VALUE_PRESERVING = ("none", "strided", "transposed")  # the same values, another memory layout


def _slots(args):
    """Where the tensors are: (argument index, None) or (argument index, list index)."""
    slots = []
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            slots.append((i, None))
        elif isinstance(arg, (list, tuple)):
            slots += [(i, j) for j, t in enumerate(arg) if isinstance(t, torch.Tensor)]
    return slots


def _get(args, slot):
    i, j = slot
    return args[i] if j is None else args[i][j]


def _set(args, slot, value):
    i, j = slot
    if j is None:
        args[i] = value
    else:
        args[i] = list(args[i])
        args[i][j] = value


def _clone(arg):
    if isinstance(arg, torch.Tensor):
        return arg.clone()
    if isinstance(arg, (list, tuple)):
        return [_clone(a) for a in arg]
    return arg


def _strided(t):
    """The same values with every stride doubled (a view into a larger buffer)."""
    if t.dim() == 0:
        return t
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)[..., ::2]
    wide.copy_(t)
    return wide


def _transposed(t):
    """The same values, the last two dimensions stored transposed (column-major)."""
    if t.dim() < 2:
        return _strided(t)
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def mutate(args, slots, mutation, pick, device):
    """args with one change; returns (args, description)."""
    args = [_clone(a) for a in args]
    floating = [s for s in slots if _get(args, s).is_floating_point()]
    slot = slots[pick % len(slots)]
    if mutation == "strided" and floating:
        slot = floating[pick % len(floating)]
        _set(args, slot, _strided(_get(args, slot)))
    elif mutation == "transposed" and floating:
        slot = floating[pick % len(floating)]
        _set(args, slot, _transposed(_get(args, slot)))
    elif mutation in ("float64", "float16", "int32") and floating:
        slot = floating[pick % len(floating)]
        _set(args, slot, _get(args, slot).to(getattr(torch, mutation)))
    elif mutation == "meta, not first":
        later = [s for s in slots if s != slots[0]] or slots
        slot = later[pick % len(later)]
        _set(args, slot, _get(args, slot).to("meta"))
    elif mutation == "meta, first":
        slot = slots[0]
        _set(args, slot, _get(args, slot).to("meta"))
    elif mutation == "other device":
        other = "cpu" if device != "cpu" else ("cuda" if torch.cuda.is_available() else "meta")
        _set(args, slot, _get(args, slot).to(other))
    elif mutation == "zero rows":
        slot = slots[0]
        t = _get(args, slot)
        if t.dim() >= 1:
            _set(args, slot, t[:0])
    elif mutation == "all meta":
        for s in slots:
            _set(args, s, _get(args, s).to("meta"))
    return args, f"{mutation} at {slot}"


def _devices(args, slots):
    return {_get(args, s).device.type for s in slots}


def _writes(args, slots):
    """The ops that write their inputs: their tensors after the call, on the CPU."""
    return [_get(args, s).detach().cpu() for s in slots]


MUTATIONS = ["none", "strided", "transposed", "float64", "float16", "int32", "meta, not first", "meta, first",
             "other device", "zero rows", "all meta"]


@pytest.mark.parametrize("device", DEVICES)
@given(op=st.sampled_from(OPS), sample=st.integers(0, 7), mutation=st.sampled_from(MUTATIONS),
       pick=st.integers(0, 63))
@settings(max_examples=EXAMPLES)
def test_fuzz_ops(device, op, sample, mutation, pick):
    samples = sample_inputs(op, device, torch.float32)
    plain = list(samples[sample % len(samples)])
    slots = _slots(plain)
    args, what = mutate(plain, slots, mutation, pick, device)
    function = getattr(torch.ops.fastwhisper, op)
    mixed = len(_devices(args, slots)) > 1
    expected = None
    if op in REFERENCES and mutation in VALUE_PRESERVING + ("zero rows",):
        try:
            expected = reference(op, _clone(args))
        except Exception:  # noqa: BLE001 (the reference cannot take these inputs: the op must raise)
            expected = None
    try:
        out = function(*args)
    except CLEAR as exc:
        assert str(exc).strip(), f"{op} ({what}): {type(exc).__name__} without a message"
        # a layout the op does not take is a clear error when it says so
        assert mutation == "none" or mutation not in VALUE_PRESERVING or "contiguous" in str(exc) \
            or "stride" in str(exc), f"{op} ({what}) refused inputs it takes contiguous: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{op} ({what}): {type(exc).__name__}: {exc} (not a clear error)")
    assert not mixed, f"{op} ({what}) returned a result for tensors on {sorted(_devices(args, slots))}"
    if mutation == "all meta":
        return  # the fake: shapes only
    if op in REFERENCES:
        if expected is None:
            assert mutation not in VALUE_PRESERVING + ("zero rows",), f"{op} ({what}): no reference"
            return
        assert out.shape == expected.shape, f"{op} ({what}): shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
        if out.numel() and out.is_floating_point() and mutation in VALUE_PRESERVING:
            assert rel_err(out, expected) <= tolerance("op", torch.float32), f"{op} ({what})"
    elif mutation in VALUE_PRESERVING:  # the ops that write their inputs: the same writes as on the plain sample
        again = [_clone(a) for a in plain]
        function(*again)
        for a, b in zip(_writes(args, slots), _writes(again, slots)):
            assert torch.equal(a, b), f"{op} ({what}) wrote other values than on contiguous inputs"


def test_profiles_are_registered():
    assert settings.get_profile("ci").max_examples < settings.get_profile("long").max_examples
