"""Arithmetic that the three backends' modules share as it is, on any framework's arrays (each backend imports its
own framework only; this file imports none)."""

from __future__ import annotations

from typing import Any


def gated(x: Any, *gates: Any, skip: bool) -> Any:
    """``x`` times each gate in turn (timm's order of products), plus ``x`` itself with the skip connection: the
    output of the coordinate-attention family."""
    out = x
    for gate in gates:
        out = out * gate
    return out + x if skip else out


class GateIdentities:
    """The gate identities of the torch and Paddle modules (``attn_core.cam.module_gates`` names them): each gate
    passes through an identity submodule of that name only while a forward hook on it waits, so that a hook reads
    the very gate the module multiplies by and a forward nobody looks at costs no call. A subclass names its
    framework's identity class and the hook dictionaries of its modules."""

    _identity: Any
    _gate_hook_dicts: tuple[str, ...]

    def add_gate(self, *names: str) -> None:
        """Give the module its gate identities, ``gate`` when no name is given."""
        for name in names or ("gate",):
            setattr(self, name, self._identity())

    def gate_hooked(self, name: str = "gate") -> bool:
        """Whether forward hooks on the gate identity ``name`` wait for the gate."""
        gate = getattr(self, name)
        return any(bool(getattr(gate, hooks)) for hooks in self._gate_hook_dicts)

    def expose_gate(self, g: Any, name: str = "gate") -> Any:
        """The gate ``g`` (NCHW) through the identity ``name`` where hooks on it read it, else ``g`` as it is."""
        return getattr(self, name)(g) if self.gate_hooked(name) else g

    def expose_branch_weights(self, a: Any, name: str) -> None:
        """The weights ``a`` (N, B, C, ...) that mix B branches (SK's paths, SplitAttn's radix splits) as one
        gate ``name`` of shape (N, B * C, 1, 1), branch-major, only while a hook waits for it."""
        if self.gate_hooked(name):
            self.expose_gate(a.reshape((a.shape[0], -1, 1, 1)), name)
