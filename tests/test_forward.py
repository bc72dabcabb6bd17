import torch

from neogen.forward import next_token_logits, pad_right


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
