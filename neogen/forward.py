"""The one forward pass everything shares: next-token logits at each prompt's last real position.

Prompts are right-padded, so real positions never see padding (causal attention) and a row's last real position
is its length minus one. `logits_to_keep` with per-row positions makes the model project only those hidden states
onto the vocabulary, instead of every position (which for a 49k vocabulary costs as much as several layers).
Calling the model's own forward (not its submodules) keeps DDP's gradient hooks intact in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token id lists into (B, T) input ids and attention mask, padding on the right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def next_token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) right-padded prompts -> (B, V) fp32 logits of the token after each prompt."""
    last = attention_mask.sum(dim=1, keepdim=True) - 1  # (B, 1) index of the last real token
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=last, use_cache=False)
    return out.logits[:, -1, :].float()  # (B, 1, V) -> (B, V)
