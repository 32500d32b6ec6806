"""The one Kullback-Leibler divergence every distillation and consistency loss is built on.

``kl_distillation`` (teacher -> student, REFERENCE A), ``class_kl`` (modality j -> modality i,
REFERENCE B) and ``consistency_loss(kind="kl")`` (EMA teacher -> student) differ only in what they
feed it (logits over a temperature, detached or not) and in how they reduce it over the batch.
"""

from __future__ import annotations

import torch


def kl_divergence(target_log_probs: torch.Tensor, log_probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` at every position, summed over ``dim``.

    Args:
        target_log_probs: ``log p`` (e.g. ``log_softmax`` of the teacher), any shape.
        log_probs: ``log q``, the distribution that is pulled towards ``p``, same shape.
        dim: the class dimension.

    Returns:
        the input shape without ``dim`` (``(B, C, H, W)`` -> ``(B, H, W)``, ``(B, C)`` -> ``(B,)``),
        >= 0, exactly 0 where the two distributions are equal. Taking log-probabilities (not
        probabilities) keeps ``p_c -> 0`` finite: ``0 * (log 0 - log q)`` never appears.
    """
    return (target_log_probs.exp() * (target_log_probs - log_probs)).sum(dim=dim)
