import pytest
import torch

from neogen.forward import next_token_logits, pad_right, suffix_logits


def test_pad_right_shapes():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batched_logits_equal_one_at_a_time(tiny_neo):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_neo).eval()
    seqs = [[464, 3290, 318, 257, 2685, 30], [1212, 0], [5, 6, 7, 8]]
    ids, mask = pad_right(seqs, pad_id=50256)
    with torch.no_grad():
        batched = next_token_logits(model, ids, mask)  # (3, V)
        assert batched.shape == (3, 50257) and batched.dtype == torch.float32
        for row, seq in enumerate(seqs):
            alone = model(torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)


# --- suffix_logits: one prompt cache shared by every label's suffix ---

PAD = 299
READ = torch.tensor([7, 11, 13])  # (A,) the answer tokens read after each suffix
# Prompts of different lengths; two are longer than the tiny GPT-Neo's local window (16), so the window matters.
PROMPTS = [[(5 * i + 3 * k) % 250 + 1 for k in range(n)] for i, n in enumerate([21, 6, 17, 1, 12])]


def tiny_model(arch: str):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "neo":
        config = GPTNeoConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4,
                              attention_types=[[["global", "local"], 1]], max_position_embeddings=128, window_size=16,
                              bos_token_id=0, eos_token_id=0)
        return GPTNeoForCausalLM(config).eval()
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=0, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def suffixes(length: int) -> torch.Tensor:
    return torch.tensor([[200 + 7 * j + k for k in range(length)] for j in range(4)])  # (L=4, S)


def naive_logits(model, prompts, suffix_ids, read_ids) -> torch.Tensor:
    """(B, L, A): every prompt + suffix as its own unpadded sequence, one model call each."""
    rows = [[model(torch.tensor([p + s.tolist()])).logits[0, -1, read_ids].float() for s in suffix_ids]
            for p in prompts]
    return torch.stack([torch.stack(r) for r in rows])


@pytest.mark.parametrize("arch", ["neo", "llama"])
@pytest.mark.parametrize("suffix_len", [1, 2])
@pytest.mark.parametrize("max_rows", [None, 3])
def test_suffix_logits_equal_naive(arch, suffix_len, max_rows):
    model = tiny_model(arch)
    ids, mask = pad_right(PROMPTS, pad_id=PAD)
    suffix_ids = suffixes(suffix_len)
    with torch.no_grad():
        got = suffix_logits(model, ids, mask, suffix_ids, READ, max_rows=max_rows)  # (B, L, A)
        want = naive_logits(model, PROMPTS, suffix_ids, READ)
    assert got.shape == (len(PROMPTS), 4, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["neo", "llama"])
def test_suffix_logits_under_inference_mode(arch):
    model = tiny_model(arch)
    ids, mask = pad_right(PROMPTS, pad_id=PAD)
    with torch.no_grad():
        want = suffix_logits(model, ids, mask, suffixes(1), READ)
    with torch.inference_mode():
        got = suffix_logits(model, ids, mask, suffixes(1), READ, max_rows=7)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def lora_grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["neo", "llama"])
def test_suffix_logits_gradients_equal_naive(arch):
    from peft import LoraConfig, get_peft_model

    base = tiny_model(arch)
    targets = ["q_proj", "k_proj", "v_proj"] + (["c_fc"] if arch == "neo" else ["up_proj"])
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
                                            init_lora_weights=False))  # random B: the adapters change the output
    model.train()
    assert all(not m.training or m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    ids, mask = pad_right(PROMPTS, pad_id=PAD)
    suffix_ids = suffixes(2)
    weights = torch.linspace(-1, 1, len(PROMPTS) * 4 * 3).view(len(PROMPTS), 4, 3)  # (B, L, A) a generic loss

    got = lora_grads(model, (suffix_logits(model, ids, mask, suffix_ids, READ, max_rows=6) * weights).sum())
    want = lora_grads(model, (naive_logits(model, PROMPTS, suffix_ids, READ) * weights).sum())
    assert got.keys() == want.keys() and len(got) > 0
    assert all(g.abs().sum() > 0 for g in got.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4, msg=name)
