"""A minimal reverse-mode differentiator over NumPy float64 arrays.

The conformance oracle must not borrow any framework's autodiff, so the reference math is written against the
few operations below, each with a hand-derived vector-Jacobian product. Every VJP here is checked against
central finite differences in ``tests/core/test_autodiff.py``.

Usage::

    x = Node(np.random.randn(2, 3))
    y = ops.mean(ops.square(x), axis=(1,), keepdims=True)
    (dx,) = backward(y, np.ones_like(y.value), [x])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Node", "backward"]

VJP = Callable[[np.ndarray], Sequence["np.ndarray | None"]]


class Node:
    """A float64 value in a computation graph, with the rule that sends a cotangent to its parents."""

    __slots__ = ("value", "parents", "vjp")

    def __init__(self, value: np.ndarray, parents: Sequence[Node] = (), vjp: VJP | None = None) -> None:
        self.value = np.asarray(value, dtype=np.float64)
        self.parents = tuple(parents)
        self.vjp = vjp

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    def __repr__(self) -> str:
        return f"Node(shape={self.value.shape})"


def _topological(out: Node) -> list[Node]:
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(out, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if id(parent) not in seen:
                stack.append((parent, False))
    return order


def backward(out: Node, cotangent: np.ndarray, wrt: Sequence[Node]) -> list[np.ndarray]:
    """Vector-Jacobian product of ``out`` with ``cotangent``, with respect to each node of ``wrt``.

    A node of ``wrt`` that ``out`` does not depend on gets zeros.
    """
    cotangent = np.asarray(cotangent, dtype=np.float64)
    if cotangent.shape != out.value.shape:
        raise ValueError(f"backward: cotangent shape {cotangent.shape} does not match output {out.value.shape}")
    grads: dict[int, np.ndarray] = {id(out): cotangent}
    for node in reversed(_topological(out)):
        g = grads.get(id(node))
        if g is None or node.vjp is None:
            continue
        for parent, pg in zip(node.parents, node.vjp(g), strict=True):
            if pg is None:
                continue
            key = id(parent)
            grads[key] = grads[key] + pg if key in grads else pg
    return [grads.get(id(n), np.zeros_like(n.value)) for n in wrt]
