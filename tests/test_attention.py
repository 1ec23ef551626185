"""Planned attention of packed training sequences: the same outputs and gradients as SDPA over
the dense mask, and transformers' own SDPA wherever a call is not a packed sequence."""

from __future__ import annotations

import pytest
import torch

from spacy_lmrc.llm import (
    AnswerSpace,
    CompactFormat,
    PairQuery,
    RelationRequest,
    SentenceFormat,
    concat_sequences,
    encode_request,
    pack_training_sequence,
)
from spacy_lmrc.llm.attention import (
    BLOCK_KERNELS,
    MATMUL_BLOCKS_MAX_BYTES,
    PACKED_SDPA,
    AttentionBlock,
    AttentionPlan,
    block_kernel,
    packed_sdpa_attention,
    planned_attention,
    use_packed_attention,
)

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport",
          "P17": "country"}


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture
def document_sequence(tokenizer):
    """A document packed by the package's own builder: its text as the prefix, then pair
    queries that share their head entity's tokens, each with its answer."""
    names = list(LABELS.values())
    text = ("Ada Lovelace was born in London. She worked with Charles Babbage in London. "
            "Babbage designed the Analytical Engine, which Lovelace described in her notes. "
            "The engine was never built in England during their lifetimes.")
    entities = [("Ada Lovelace", "PER"), ("London", "LOC"), ("Charles Babbage", "PER"),
                ("Analytical Engine", "MISC"), ("England", "LOC")]
    queries = [PairQuery(h, t, ht, tt) for h, ht in entities for t, tt in entities if h != t]
    encoded = encode_request(tokenizer, CompactFormat(), RelationRequest(text, queries, names))
    space = AnswerSpace(tokenizer, names, separator=CompactFormat().separator)
    answers = [space.encode(names[i % len(names):][:1 + i % 2]) for i in range(len(queries))]
    return pack_training_sequence(encoded, answers)


@pytest.fixture
def sentence_batch(tokenizer):
    """Three one-sentence packed sequences concatenated into one forward call."""
    names = list(LABELS.values())
    space = AnswerSpace(tokenizer, names, multi_label=False)
    sequences = []
    for text, pairs in (("Ada Lovelace was born in London.", [("Ada Lovelace", "London")]),
                        ("Babbage designed the Analytical Engine.",
                         [("Analytical Engine", "Babbage"), ("Babbage", "Analytical Engine")]),
                        ("Paris.", [("Paris", "France")])):
        request = RelationRequest(text, [PairQuery(h, t) for h, t in pairs], names,
                                  multi_label=False)
        encoded = encode_request(tokenizer, SentenceFormat(), request)
        sequences.append(pack_training_sequence(encoded, [space.encode([names[0]])] * len(pairs)))
    return concat_sequences(sequences)


def _llama(tiny_llama, implementation):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")
    if implementation == PACKED_SDPA:
        assert use_packed_attention(model)
    return model.train()


def _dense(query, key, value, mask, dropout=0.0):
    """transformers' SDPA attention over the whole mask: the reference."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.num_key_value_groups = query.shape[1] // key.shape[1]
    return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout)[0]


def _grads(fn, tensors, seed=0):
    """Output of ``fn`` and the gradients of a fixed random projection of it."""
    for t in tensors:
        t.grad = None
    out = fn()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out.float() * weights).sum().backward()
    return out.detach().float(), [t.grad.float().clone() for t in tensors]


def test_a_plan_lists_every_key_its_rows_see(document_sequence, sentence_batch):
    for seq in (document_sequence, sentence_batch):
        visible = seq.visible()
        plan = AttentionPlan.of(seq, block=16)
        assert plan.length == len(seq)
        assert [b.start for b in plan.blocks[1:]] == [b.end for b in plan.blocks[:-1]]
        assert plan.blocks[0].start == 0 and plan.blocks[-1].end == len(seq)
        for block in plan.blocks:
            listed = torch.zeros(len(seq), dtype=torch.bool)
            listed[block.keys] = True
            assert not (visible[block.start:block.end] & ~listed).any()
        assert plan.scores < len(seq) ** 2
    prefix = len(document_sequence.prefix_ids)
    blocks = AttentionPlan.of(document_sequence, block=16).blocks
    assert all(isinstance(b.keys, slice) and b.keys == slice(0, b.end)
               for b in blocks if b.end <= prefix)  # the prefix: causal
    assert any(not isinstance(b.keys, slice) for b in blocks)  # a tree block gathers
    starts = [0]
    for seq in sentence_batch.sequences:
        starts.append(starts[-1] + len(seq))
    for block in AttentionPlan.of(sentence_batch, block=16).blocks:  # within one sentence
        sentence = max(i for i, start in enumerate(starts) if start <= block.start)
        assert block.end <= starts[sentence + 1]


@pytest.mark.parametrize("kernel", sorted(BLOCK_KERNELS))
@pytest.mark.parametrize("block", [1, 7, 32, 256])
@pytest.mark.parametrize("layout", ["document", "sentences"])
def test_planned_attention_equals_dense_sdpa(document_sequence, sentence_batch, layout, block,
                                             kernel):
    seq = document_sequence if layout == "document" else sentence_batch
    n = len(seq)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, n, 8, generator=gen, requires_grad=True)
    k = torch.randn(1, 2, n, 8, generator=gen, requires_grad=True)
    v = torch.randn(1, 2, n, 8, generator=gen, requires_grad=True)
    mask = seq.mask(torch.float32)
    plan = AttentionPlan.of(seq, block=block, kernel=kernel)
    dense, dense_grads = _grads(lambda: _dense(q, k, v, mask), [q, k, v])
    planned, planned_grads = _grads(lambda: planned_attention(q, k, v, mask, plan), [q, k, v])
    assert planned.shape == dense.shape == (1, n, 4, 8)
    torch.testing.assert_close(planned, dense, atol=1e-5, rtol=1e-5)
    for ours, reference in zip(planned_grads, dense_grads):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", sorted(BLOCK_KERNELS))
def test_planned_attention_under_bf16_autocast_matches_dense(document_sequence, kernel):
    """As in bf16 training: queries and keys fp32 (rotary), values bf16, a bf16 mask."""
    n = len(document_sequence)
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, n, 16, generator=gen, requires_grad=True)
    k = torch.randn(1, 2, n, 16, generator=gen, requires_grad=True)
    v = torch.randn(1, 2, n, 16, generator=gen).bfloat16().requires_grad_()
    mask = document_sequence.mask(torch.bfloat16)
    plan = AttentionPlan.of(document_sequence, block=16, kernel=kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense, dense_grads = _grads(lambda: _dense(q, k, v, mask), [q, k, v])
        planned, planned_grads = _grads(lambda: planned_attention(q, k, v, mask, plan),
                                        [q, k, v])
    torch.testing.assert_close(planned, dense, atol=2e-2, rtol=2e-2)
    for ours, reference in zip(planned_grads, dense_grads):
        torch.testing.assert_close(ours, reference, atol=5e-2, rtol=5e-2)


def test_a_bool_mask_gives_the_additive_masks_attention(document_sequence):
    n = len(document_sequence)
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 8, generator=gen) for _ in range(3))
    additive = planned_attention(q, k, v, document_sequence.mask(torch.float32),
                                 AttentionPlan.of(document_sequence, block=16, kernel="matmul"))
    bool_mask = document_sequence.visible()[None, None]
    for kernel in BLOCK_KERNELS:
        plan = AttentionPlan.of(document_sequence, block=16, kernel=kernel)
        torch.testing.assert_close(planned_attention(q, k, v, bool_mask, plan), additive,
                                   atol=1e-5, rtol=1e-5)


def test_blocks_are_matmuls_in_bf16_on_cpu_unless_their_scores_take_too_much_memory():
    short = AttentionPlan(128, (AttentionBlock(0, 128, slice(0, 128)),))
    assert block_kernel(torch.zeros(1, 9, 128, 4), short) == "sdpa"
    assert block_kernel(torch.zeros(1, 9, 128, 4, dtype=torch.bfloat16), short) == "matmul"
    # 9 heads x 2,048 x 4,096 scores x 6 bytes kept: over the budget, fused SDPA keeps less
    long = AttentionPlan(4096, (AttentionBlock(2048, 4096, slice(0, 4096)),))
    assert long.scores * 9 * 6 > MATMUL_BLOCKS_MAX_BYTES
    assert block_kernel(torch.zeros(1, 9, 4096, 4, dtype=torch.bfloat16), long) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention block kernel 'flex'"):
        AttentionPlan(1, (AttentionBlock(0, 1, slice(0, 1)),), kernel="flex")


@pytest.mark.parametrize("layout", ["document", "sentences"])
def test_a_model_on_packed_attention_trains_as_on_sdpa(tiny_llama, document_sequence,
                                                      sentence_batch, layout):
    """The whole model, as fine-tuning calls it: the same logits, loss and weight gradients."""
    seq = document_sequence if layout == "document" else sentence_batch
    results = {}
    for implementation in ("sdpa", PACKED_SDPA):
        model = _llama(tiny_llama, implementation)
        extra = ({"attention_plan": AttentionPlan.of(seq, block=8)}
                 if implementation == PACKED_SDPA else {})
        out = model(input_ids=torch.tensor([seq.input_ids]),
                    position_ids=torch.tensor([seq.position_ids]),
                    attention_mask=seq.mask(torch.float32), use_cache=False,
                    logits_to_keep=torch.tensor(seq.target_index), **extra)
        loss = torch.nn.functional.cross_entropy(out.logits[0], torch.tensor(seq.target_ids))
        loss.backward()
        results[implementation] = (out.logits.detach(), {
            name: p.grad.clone() for name, p in model.named_parameters()})
    (logits, grads), (packed_logits, packed_grads) = results["sdpa"], results[PACKED_SDPA]
    torch.testing.assert_close(packed_logits, logits, atol=1e-5, rtol=1e-5)
    assert packed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_calls_without_a_plan_run_sdpa_unchanged(tiny_llama):
    """A padded batch (2D mask) and decoding with a KV cache, on a switched model."""
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    outputs = {}
    for implementation in ("sdpa", PACKED_SDPA):
        model = _llama(tiny_llama, implementation).eval()
        with torch.no_grad():
            padded = model(input_ids=ids, attention_mask=padding).logits
            first = model(input_ids=ids[:1, :3], use_cache=True)
            step = model(input_ids=ids[:1, 3:], cache=first.cache).logits
        outputs[implementation] = (padded, step)
    for ours, reference in zip(outputs[PACKED_SDPA], outputs["sdpa"]):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_a_plan_that_does_not_fit_the_call_is_an_error(tiny_llama, document_sequence,
                                                      sentence_batch):
    model = _llama(tiny_llama, PACKED_SDPA)
    seq = document_sequence
    with pytest.raises(ValueError, match=f"covers {len(sentence_batch)} tokens"):
        model(input_ids=torch.tensor([seq.input_ids]),
              position_ids=torch.tensor([seq.position_ids]), use_cache=False,
              attention_mask=seq.mask(torch.float32),
              attention_plan=AttentionPlan.of(sentence_batch))
    attention = model.model.layers[0].self_attn
    plan = AttentionPlan.of(seq)
    q, k = torch.zeros(1, 4, len(seq), 8), torch.zeros(1, 2, len(seq), 8)
    with pytest.raises(ValueError, match="needs the dense 4D attention_mask"):
        packed_sdpa_attention(attention, q, k, k, None, attention_plan=plan)
    with pytest.raises(ValueError, match="describes one packed row"):
        packed_sdpa_attention(attention, q.expand(2, -1, -1, -1), k, k, seq.mask(torch.float32),
                              attention_plan=plan)


def test_only_sdpa_models_are_switched(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from spacy_lmrc.llm.loading import peft_wrapping

    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    assert not use_packed_attention(eager)
    assert eager.config._attn_implementation == "eager"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")
    with peft_wrapping():
        lora = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear",
                                               task_type="CAUSAL_LM"))
    assert use_packed_attention(lora)
    assert base.config._attn_implementation == PACKED_SDPA
