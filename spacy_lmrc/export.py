"""A fine-tuned relation classifier (or any Llama-architecture model) as one GGUF file, for a
llama.cpp server (:class:`~spacy_lmrc.backends.openai.OpenAIBackend`).

The model is loaded as ``HFBackend`` loads it (a LoRA adapter merged into its base, the
tokenizer with the trained end token) and written with the ``gguf`` package the way llama.cpp's
``convert_hf_to_gguf.py`` writes a ``LlamaForCausalLM``: llama.cpp's tensor names (the
``gguf`` package's map), the query and key projections permuted to llama.cpp's rotary layout,
the hyper-parameters, and the byte-level BPE vocabulary with its merges, special tokens and the
pre-tokenizer llama.cpp must apply (told apart by the converter's own check: the hash of the
tokens of one test text). Weights are written in float32, float16 or bfloat16, unquantized, so a
server reads what the in-process backend reads. Other architectures: merge the classifier
(:meth:`RCModel.load <spacy_lmrc.classifier.model.RCModel.load>`, ``save_pretrained``) and run
llama.cpp's converter on that folder; vLLM and SGLang serve such a folder as it is.
"""

from __future__ import annotations

import tempfile
from hashlib import sha256
from pathlib import Path
from typing import Any

from .errors import InputError

#: the text llama.cpp's converter tokenizes to recognise a BPE pre-tokenizer
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
#: pre-tokenizers by the hash of the tokens of ``_CHECK_TEXT`` (llama.cpp's converter's values)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
}
DTYPES = ("float32", "float16", "bfloat16")


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's name of the BPE pre-tokenizer of ``tokenizer``, as its converter tells it."""
    digest = sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise InputError(f"the tokenizer's pre-tokenizer is not one spacy-lmrc can name for "
                         f"llama.cpp (hash {digest}): pass pre_tokenizer (llama.cpp's "
                         "tokenizer.ggml.pre, e.g. llama-bpe) or use llama.cpp's "
                         "convert_hf_to_gguf.py", field="tokenizer")
    return PRE_TOKENIZERS[digest]


def load_for_export(model: str | Path) -> tuple[Any, Any]:
    """The model (float32, on the CPU, LoRA merged) and tokenizer of a classifier folder, or of
    a Hugging Face folder or hub name."""
    import torch

    from .classifier.model import RCModel
    from .llm.loading import load_model, load_tokenizer, resolve_llm

    if RCModel.is_folder(model):
        return RCModel.from_pretrained(model).load(torch.device("cpu"), torch.float32)
    if Path(model).is_dir() and not (Path(model) / "config.json").exists():
        raise InputError("neither a classifier folder (lmrc_training.json) nor a Hugging Face "
                         "model folder (config.json)", path=model)
    path = resolve_llm(str(model))
    return (load_model(path, torch.device("cpu"), torch.float32).eval(), load_tokenizer(path))


def _permute(weights: Any, heads: int) -> Any:
    """Hugging Face's rotary halves to llama.cpp's interleaved pairs (the converter's
    ``LlamaModel.permute``)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def export_gguf(model: str | Path, output: str | Path, dtype: str = "float32",
                pre_tokenizer: str | None = None) -> Path:
    """Write ``model`` (a classifier folder of ``spacy-lmrc finetune-classifier``, or a
    Llama-architecture Hugging Face folder or hub name) to the GGUF file ``output``.

    dtype: the matrices' type (``float32``, ``float16``, ``bfloat16``); norms stay float32.
    pre_tokenizer: llama.cpp's name of the BPE pre-tokenizer; None tells it from the tokenizer.
    """
    import gguf
    import numpy as np

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})",
                         field="dtype")
    hf_model, tokenizer = load_for_export(model)
    config = hf_model.config
    if config.model_type != "llama":
        raise InputError(f"the model is a {config.model_type!r} model; export-gguf writes "
                         "Llama-architecture models (SmolLM2, Llama): merge it and use "
                         "llama.cpp's convert_hf_to_gguf.py", path=model, field="model_type")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise InputError(f"rope scaling {rope.get('rope_type')!r} is not exported: use "
                         "llama.cpp's convert_hf_to_gguf.py", path=model, field="rope_scaling")
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(output, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(Path(str(model)).name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"float32": gguf.LlamaFileType.ALL_F32,
                          "float16": gguf.LlamaFileType.MOSTLY_F16,
                          "bfloat16": gguf.LlamaFileType.MOSTLY_BF16}[dtype])
    _write_vocabulary(writer, tokenizer, config.vocab_size, pre_tokenizer)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = hf_model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # llama.cpp reads the embeddings when output is absent
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        data = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise InputError(f"tensor {name!r} has no llama.cpp name", path=model, field=name)
        if data.ndim == 1 or dtype == "float32":
            writer.add_tensor(new_name, np.ascontiguousarray(data, dtype=np.float32))
        elif dtype == "float16":
            writer.add_tensor(new_name, data.astype(np.float16))
        else:
            bf16 = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(new_name, bf16, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def _write_vocabulary(writer: Any, tokenizer: Any, vocab_size: int,
                      pre_tokenizer: str | None) -> None:
    """The byte-level BPE vocabulary as llama.cpp's converter writes it (``_set_vocab_gpt2``):
    tokens and their types, merges, special tokens, whether a BOS is added."""
    import gguf

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise InputError(f"the tokenizer has ids up to {max(vocab.values())}, the model only "
                         f"{vocab_size} embeddings", field="vocab_size")
    reverse = {i: token for token, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = decoder[i].special
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer or pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)  # the trained end token, as the classifier uses it
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    ids = tokenizer("x")["input_ids"]
    special.add_special_token["bos"] = bool(ids) and ids[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = False
    special.add_to_gguf(writer)
