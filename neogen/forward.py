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
import transformers
from packaging.version import Version

# transformers 5.24 renamed the key/value cache argument and output field `past_key_values` to `cache`; the old
# name warns until it goes in 5.40, inside this package's `transformers<6` pin, so each version gets its own name.
CACHE_NAME = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


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


def suffix_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, suffix_ids: torch.Tensor,
                  read_ids: torch.Tensor, max_rows: int | None = None) -> torch.Tensor:
    """(B, T) right-padded prompts, (L, S) suffixes -> (B, L, A) fp32 logits, at `read_ids`, after prompt_b + suffix_j.

    For every prompt b and every suffix j (e.g. one label token, answered by " yes" / " no"), this is the next-token
    logits of the unpadded sequence `prompt_b + suffix_j` after its last token, read at the A `read_ids` columns.
    The prompt's key/value cache is computed once, so L suffixes cost L * S tokens per prompt on top of one prompt
    pass, not L full prompts. Works under autograd (gradients reach the prompt pass through the cache, LoRA included)
    and under `torch.inference_mode()`.

    How: one prompt pass with `use_cache=True`; the cache is then copied to B * L rows (at most `max_rows` rows per
    suffix pass, to bound memory when scoring; in training every chunk's graph lives until backward anyway) and the
    (B * L, S) suffix tokens run over it with position ids len_b + arange(S) (learned absolute positions in GPT-Neo,
    RoPE in Llama) and a 2-D mask that hides each prompt's padding.

    The cache is expanded per label rather than run as one (B, L * S) suffix pass under a custom 4-D mask: GPT-Neo's
    eager attention applies its own local-window mask by physical cache slot, which that layout would silently
    break once T + L * S exceeds the window, and flash attention takes no 4-D mask (docs/design.md).

    The cache is re-aligned from right- to left-padded before the suffix pass (each row rolled by its length), so
    that physical distances between a suffix token and the real prompt tokens equal their logical distances: that
    keeps GPT-Neo's physical local window right even when T + S exceeds the window. Positions themselves come from
    `position_ids`, so RoPE keys cached at their real positions stay valid.

    Only DynamicCache with full-attention layers is supported (GPT-Neo, Llama and the like); no gradient
    checkpointing (it turns the cache off in training).
    """
    from transformers import DynamicCache

    batch, n_suffix, suffix_len = input_ids.shape[0], *suffix_ids.shape
    device = input_ids.device
    lengths = attention_mask.sum(dim=1)  # (B,) real tokens per prompt
    kv, left_mask = _left_aligned_cache(model, input_ids, attention_mask, lengths)
    rows = batch * n_suffix  # row r = b * L + j
    step = rows if max_rows is None else max(1, int(max_rows))
    offsets = torch.arange(suffix_len, device=device)  # (S,)
    suffix_ids, read_ids = suffix_ids.to(device), read_ids.to(device)
    chunks = []
    for start in range(0, rows, step):
        r = torch.arange(start, min(start + step, rows), device=device)  # (R,)
        b, j = r // n_suffix, r % n_suffix  # (R,) prompt and suffix of each row
        chunk_cache = DynamicCache()
        for i, (keys, values) in enumerate(kv):
            chunk_cache.update(keys, values, i)  # (B, H, T, D)
        chunk_cache.batch_select_indices(b)  # (R, H, T, D): the prompt cache copied once per label
        mask = torch.cat([left_mask[b], torch.ones_like(left_mask[b, :1]).expand(-1, suffix_len)], dim=1)  # (R, T+S)
        positions = lengths[b, None] + offsets  # (R, S) logical positions right after each prompt
        out = model(input_ids=suffix_ids[j], attention_mask=mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **{CACHE_NAME: chunk_cache})
        chunks.append(out.logits[:, -1, read_ids].float())  # (R, 1, V) -> (R, A)
        del out, chunk_cache
    return torch.cat(chunks).view(batch, n_suffix, -1)  # (B * L, A) -> (B, L, A)


def _left_aligned_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        lengths: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One prompt pass; its per-layer (keys, values), rolled from right- to left-padded, and the rolled mask."""
    width, device = input_ids.shape[1], input_ids.device
    # Only the cache is needed, so keep no logits (an empty position list skips the vocabulary head).
    no_logits = torch.zeros(0, dtype=torch.long, device=device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=no_logits)
    cache = out.get(CACHE_NAME)
    if cache is None or not hasattr(cache, "layers"):
        raise RuntimeError("suffix_logits needs the model's key/value cache (no gradient checkpointing)")
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False) or layer.get_seq_length() != width:
            raise NotImplementedError(f"suffix_logits supports full-attention dynamic caches only, got {layer!r}")
    # Position t of row b takes old position (t + len_b) mod T, so the real tokens end at T-1.
    roll = (torch.arange(width, device=device) + lengths[:, None]) % width  # (B, T)
    kv = []
    for layer in cache.layers:
        idx = roll[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])  # (B, H, T, D)
        kv.append((layer.keys.gather(2, idx), layer.values.gather(2, idx)))  # 2 x (B, H, T, D)
    return kv, attention_mask.gather(1, roll)  # (B, T) 0 then 1
