"""How the modules compute for low-precision inputs, decided once for every module and backend.

float16 and bfloat16 inputs are computed in float32 (the pooled statistics, the gate and the final product) and
the output is rounded to the input's dtype once, at the end; parameters stay in their own dtype and are cast on
use, so their gradients are rounded once too: rounding every intermediate of a 10-20 op chain to half misses the
half tolerances on parameter gradients even with exactly rounded ops, JAX's backward of a broadcast product
accumulates in half, and SimAM's squared deviations overflow float16 for ordinary activations (the figures:
benchmarks/NOTES.md, "Half precision, measured"). float32 and float64 inputs compute in their own dtype.

The dtype policy, one rule for every backend (:func:`accepted_input_dtypes`): an attention module takes an input whose
compute dtype is its parameters' compute dtype (float32 parameters: float16, bfloat16 and float32 inputs; float16
parameters the same; float64 parameters: float64 inputs), and returns the input's dtype. Any other pairing, a float64
input into a float32 module or a float32 input into a float64 one, is an ``InputDtypeError`` naming the module, both
dtypes and the conversion (:func:`dtype_mismatch_message`), never a silent cast either way. A module without
parameters (SimAM) has no dtype of its own and takes every floating dtype. A model's parameters are used by the
framework's own layers, which compute in the parameters' dtype: a model takes its parameters' dtype only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

__all__ = ["COMPUTE_DTYPES", "FLOAT_DTYPES", "LOW_PRECISION", "compute_dtype", "accepted_input_dtypes",
           "dtype_mismatch_message", "CONVERSIONS"]

#: the floating-point dtypes a module can be handed, in the order error messages list them
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")

#: input dtype name -> the dtype the modules compute in, for the dtypes computed in another one
COMPUTE_DTYPES: Mapping[str, str] = MappingProxyType({"float16": "float32", "bfloat16": "float32"})

#: the half-precision dtypes: those computed in another dtype (float32), in :data:`FLOAT_DTYPES` order
LOW_PRECISION: tuple[str, ...] = tuple(d for d in FLOAT_DTYPES if d in COMPUTE_DTYPES)


def compute_dtype(dtype: str) -> str:
    """The dtype a module computes in for an input of ``dtype`` (a name such as ``'float16'``)."""
    return COMPUTE_DTYPES.get(dtype, dtype)


def accepted_input_dtypes(param_dtypes: Collection[str], device_dtypes: Sequence[str],
                          half_in_float32: bool = True) -> tuple[str, ...]:
    """The input dtypes a module takes (the policy above), in :data:`FLOAT_DTYPES` order.

    ``param_dtypes`` are its floating parameters' dtypes (empty: no parameters, every dtype); ``device_dtypes`` the
    dtypes the backend computes in on this device (what its kernels exist for); ``half_in_float32`` whether the
    module computes half inputs in float32 (the attention modules) or in its parameters' dtype (the models).
    Parameters of more than one compute dtype accept nothing.
    """
    if half_in_float32:
        wanted = {compute_dtype(d) for d in param_dtypes}
        return tuple(d for d in FLOAT_DTYPES if compute_dtype(d) in device_dtypes
                     and (not wanted or wanted == {compute_dtype(d)}))
    wanted = set(param_dtypes)
    return tuple(d for d in FLOAT_DTYPES if d in device_dtypes and (not wanted or wanted == {d}))


#: framework -> (how to convert an input, how to convert a module), each with ``{dtype}`` to fill in
CONVERSIONS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "torch": ("x.to(torch.{dtype})", "module.to(torch.{dtype})"),
    "paddle": ("x.astype('{dtype}')", "module.to(dtype='{dtype}')"),
    "flax": ("x.astype(jnp.{dtype})", "jax.tree.map(lambda a: a.astype(jnp.{dtype}), variables)"),
})


def dtype_mismatch_message(module: str, input_dtype: str, param_dtypes: Collection[str], accepted: Sequence[str],
                           framework: str | None = None) -> str:
    """The one text of a floating-point input the module does not take: the module, its parameters' dtype, the
    input's, what it accepts here, and how to convert either side (``framework`` picks the spelling)."""
    params = " and ".join([d for d in FLOAT_DTYPES if d in param_dtypes] +
                          sorted(d for d in param_dtypes if d not in FLOAT_DTYPES))
    text = (f"{module}: its parameters are {params}, so it takes {listing(accepted) or 'no input on this device'}; "
            f"got an input of dtype {input_dtype}")
    conversion = CONVERSIONS.get(framework) if framework is not None else None
    if conversion is not None and accepted:
        to_input, to_module = conversion
        text += f". Convert the input ({to_input.format(dtype=accepted[-1])})"
        if input_dtype in FLOAT_DTYPES:
            text += f" or the module ({to_module.format(dtype=compute_dtype(input_dtype))})"
    return text


def listing(dtypes: Sequence[str]) -> str:
    """``'float16, bfloat16 or float32'``."""
    return " or ".join(filter(None, [", ".join(dtypes[:-1]), dtypes[-1] if dtypes else ""]))
