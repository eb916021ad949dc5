"""A discrete action space as one set of A = Π sizes joint actions, for the tree search.

The env-facing action is Reverie's vector of one one-hot block per dimension (`ActionSpace`,
Discrete(n) → (n,), MultiDiscrete([3, 4]) → (3 + 4,)); the search picks one joint index in
0 … A − 1, read row-major (the last dimension fastest), so MultiDiscrete([3, 4]) has 12 actions and
index 7 is (1, 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_JOINT_ACTIONS = 4096  # more joint actions than this makes a tree node too wide to search


class JointActions:
    def __init__(self, sizes: tuple[int, ...]):
        self.sizes = tuple(int(s) for s in sizes)
        self.count = math.prod(self.sizes)
        # strides of a row-major index: (Π sizes[1:], …, sizes[-1], 1)
        self.strides = [math.prod(self.sizes[d + 1:]) for d in range(len(self.sizes))]

    def to_vector(self, index: torch.Tensor) -> torch.Tensor:
        """(…,) int64 joint indices → (…, Σ sizes) float32 one-hot blocks."""
        blocks = [F.one_hot((index // stride) % size, size) for stride, size in zip(self.strides, self.sizes)]
        return torch.cat(blocks, -1).float()

    def digits(self, device=None) -> torch.Tensor:
        """(A, D) int64: the per-dimension index of every joint action."""
        index = torch.arange(self.count, device=device)
        return torch.stack([(index // stride) % size for stride, size in zip(self.strides, self.sizes)], -1)

    def joint_log_probs(self, log_probs: list[torch.Tensor]) -> torch.Tensor:
        """A factorised policy's per-dimension log-probabilities [(M, sizes_d)] → (M, A): the log-probability
        of each joint action, Σ_d log p_d(a_d)."""
        digits = self.digits(log_probs[0].device)  # (A, D)
        return sum(lp[:, digits[:, d]] for d, lp in enumerate(log_probs))

    def from_vector(self, vector: torch.Tensor) -> torch.Tensor:
        """(…, Σ sizes) one-hot blocks → (…,) int64 joint indices."""
        index = torch.zeros(vector.shape[:-1], dtype=torch.long, device=vector.device)
        for block, stride in zip(vector.split(self.sizes, -1), self.strides):
            index = index + block.argmax(-1) * stride
        return index
