"""Fine-tuning: dataset building, answer-only labels, the training precision, and a few steps
on a tiny Llama."""

from __future__ import annotations

import json
import math

import pytest

from spacy_lmrc.allocator import loaded_allocator
from spacy_lmrc.backends.hf import HFBackend
from spacy_lmrc.classifier.model import RCModel
from spacy_lmrc.classifier.training import (
    FinetuneSettings,
    build_packed_sequences,
    finetune,
    training_precision,
)
from spacy_lmrc.errors import InputError
from spacy_lmrc.tasks.lmrc import LMRCTask

LABELS = {"P19": "place of birth", "P170": "creator", "P1327": "partner in business or sport"}


def test_rc_training_requests_hold_only_gold_pairs(toy_doc):
    task = LMRCTask(labels=LABELS)
    request, targets = task.training_request(toy_doc)
    asked = [(q.head, q.tail) for q in request.queries]
    assert len(asked) == 3  # the 3 gold pairs, nothing else
    assert targets[asked.index(("Ada Lovelace", "London"))] == ["place of birth"]
    assert targets[asked.index(("Analytical Engine", "Charles Babbage"))] == ["creator"]
    assert ["None"] not in targets


def test_baseline_training_requests_hold_every_pair_with_none(toy_doc):
    task = LMRCTask(labels=LABELS, allow_none=True)
    request, targets = task.training_request(toy_doc)
    assert len(request.queries) == 12  # 4 entities: 12 ordered pairs, each with relations or None
    assert request.none_answer == "None"
    nones = [(q.head, q.tail) for q, names in zip(request.queries, targets) if names == ["None"]]
    assert len(nones) == 9 and sum(tail == "London" for _, tail in nones) == 2


def test_labels_cover_answer_tokens_only(tiny_llama, toy_doc):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    (seq,) = build_packed_sequences(LMRCTask(labels=LABELS), [toy_doc], tokenizer)
    # every target is an answer token: a relation name's tokens, then the end token
    assert tokenizer.decode(seq.target_ids).count(tokenizer.eos_token) == 3
    assert all(index >= len(seq.prefix_ids) for index in seq.target_index)
    assert seq.input_ids[: len(seq.prefix_ids)] == seq.prefix_ids


def test_documents_whose_pairs_exceed_max_length_are_split_and_counted(tiny_llama, toy_doc):
    from collections import Counter

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    task = LMRCTask(labels=LABELS, allow_none=True, train_negatives=None)  # all 12 pairs
    (whole,) = build_packed_sequences(task, [toy_doc], tokenizer)
    counts = Counter()
    parts = build_packed_sequences(task, [toy_doc], tokenizer, counts=counts,
                                   max_length=len(whole) - 10)
    assert len(parts) >= 2 and all(len(part) <= len(whole) - 10 for part in parts)
    assert counts["split_documents"] == 1 and counts["split_sequences"] == len(parts)
    assert sum(len(part.target_ids) for part in parts) == len(whole.target_ids)


def test_a_token_budget_without_max_steps_sets_the_schedule(tiny_llama, toy_doc, tmp_path):
    """The learning rate decays over the steps max_tokens takes, not over the epochs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    (seq,) = build_packed_sequences(LMRCTask(labels=LABELS), [toy_doc], tokenizer)
    settings = FinetuneSettings(base_model=tiny_llama, epochs=50, batch_size=1, warmup_steps=1,
                                max_tokens=3 * len(seq), save_every=100)
    summary = finetune(LMRCTask(labels=LABELS), [toy_doc], tmp_path / "out", settings)
    assert summary["schedule_steps"] == 3 and summary["steps"] == 3
    assert summary["train_tokens"] == 3 * len(seq)


def test_planned_attention_trains_as_sdpa_and_is_recorded(tiny_llama, toy_doc, tmp_path,
                                                          monkeypatch):
    """finetune.attention = planned: the same losses as SDPA over the dense mask, every
    forward call given its plan."""
    from spacy_lmrc.classifier import training as finetune_module

    planned_calls = []
    packed_loss = finetune_module.packed_loss

    def spy(model, seq, dtype):
        planned_calls.append(finetune_module.uses_packed_attention(model))
        return packed_loss(model, seq, dtype)

    monkeypatch.setattr(finetune_module, "packed_loss", spy)
    task = LMRCTask(labels=LABELS, allow_none=True, train_negatives=None)
    losses = {}
    for attention in ("sdpa", "planned"):
        settings = FinetuneSettings(base_model=tiny_llama, max_steps=3, batch_size=1,
                                    warmup_steps=1, learning_rate=1e-3, attention=attention,
                                    dtype="float32", save_every=100)
        losses[attention] = finetune(task, [toy_doc], tmp_path / attention, settings)["losses"]
    assert planned_calls == [False] * 3 + [True] * 3
    assert losses["planned"] == pytest.approx(losses["sdpa"], rel=1e-4)
    with pytest.raises(InputError, match="attention"):
        finetune(task, [toy_doc], tmp_path / "x",
                 FinetuneSettings(base_model=tiny_llama, max_steps=1, attention="flash"))


def test_seq2seq_base_model_is_refused(tmp_path, toy_doc, monkeypatch):
    from spacy_lmrc.classifier import training as finetune_module

    monkeypatch.setattr(finetune_module, "is_seq2seq", lambda path: True)
    with pytest.raises(InputError, match="seq2seq"):
        finetune(LMRCTask(labels=LABELS), [toy_doc], tmp_path / "out",
                 FinetuneSettings(base_model=str(tmp_path)))


def test_tiny_llama_finetunes_saves_and_resumes(tiny_llama, toy_doc, tmp_path):
    task = LMRCTask(labels=LABELS)
    out = tmp_path / "adapter"
    settings = FinetuneSettings(base_model=tiny_llama, max_steps=3, batch_size=1,
                                warmup_steps=1, save_every=2, learning_rate=1e-3)
    summary = finetune(task, [toy_doc], out, settings)
    # packed: one training sequence per document (its 3 gold pairs after the text)
    assert summary["steps"] == 3 and summary["training_prompts"] == 1
    assert (out / "adapter_config.json").exists()
    assert (out / "checkpoints" / "step-2" / "training_state.pt").exists()
    stored = RCModel.from_pretrained(out).description
    assert stored["task"]["labels"] == LABELS
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8

    # resume: a longer run continues from step 2's checkpoint instead of starting over
    more = finetune(task, [toy_doc], out, FinetuneSettings(
        base_model=tiny_llama, max_steps=4, batch_size=1, warmup_steps=1, save_every=2),
        resume=True)
    assert more["steps"] == 4
    assert more["losses"][:2] == summary["losses"][:2]

    backend = HFBackend(max_new_tokens=5, batch_size=2)
    backend.use_classifier(RCModel.from_pretrained(out))  # the folder names its base model
    answers = backend.generate(["one prompt", "a second, longer prompt"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert backend.prompt_tokens > 0


@pytest.mark.parametrize(("dtype", "native", "expected"), [
    ("auto", True, "bf16"), ("auto", False, "no"),  # AVX512-BF16 / AMX; AVX2 only: fp32
    ("float32", True, "no"), ("bfloat16", False, "bf16"),  # the overrides win
])
def test_training_precision_follows_the_cpu_unless_overridden(monkeypatch, dtype, native,
                                                               expected):
    import torch

    from spacy_lmrc import util

    monkeypatch.setattr(util, "cpu_has_bf16_matmul", lambda: native)
    assert training_precision(dtype, torch.device("cpu")) == expected


def test_unknown_training_dtype_is_refused():
    import torch

    with pytest.raises(InputError, match="expected auto, float32 or bfloat16"):
        training_precision("float16", torch.device("cpu"))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_autocast_step_keeps_fp32_weights(tiny_llama, toy_doc, tmp_path, monkeypatch,
                                               method):
    import torch
    from safetensors.torch import load_file

    from spacy_lmrc.classifier import training as finetune_module

    seen = []
    packed_loss = finetune_module.packed_loss

    def spy(model, seq, dtype):
        loss = packed_loss(model, seq, dtype)
        seen.append((dtype, torch.is_autocast_enabled("cpu"), loss.dtype))
        return loss

    monkeypatch.setattr(finetune_module, "packed_loss", spy)
    out = tmp_path / method
    summary = finetune(LMRCTask(labels=LABELS), [toy_doc], out, FinetuneSettings(
        base_model=tiny_llama, method=method, dtype="bfloat16", max_steps=1, batch_size=1,
        warmup_steps=0, learning_rate=1e-3))
    assert summary["mixed_precision"] == "bf16"
    assert summary["optimizer"] == "AdamW (fused)"
    assert summary["allocator"] == loaded_allocator()  # the allocator this process runs with
    assert math.isfinite(summary["final_loss"])
    # the forward ran under autocast with a bf16 mask; the loss is fp32
    assert seen == [(torch.bfloat16, True, torch.float32)]
    trained = load_file(str(out / ("model.safetensors" if method == "full"
                                   else "adapter_model.safetensors")))
    assert {tensor.dtype for tensor in trained.values()} == {torch.float32}
    if method == "full":  # the update reached the fp32 master weights
        base = load_file(f"{tiny_llama}/model.safetensors")
        assert any(not torch.equal(base[name], trained[name]) for name in trained)


def test_qlora_on_cpu_is_refused(tiny_llama, toy_doc, tmp_path):
    task = LMRCTask(labels=LABELS)
    with pytest.raises(ValueError, match="CUDA"):
        finetune(task, [toy_doc], tmp_path, FinetuneSettings(base_model=tiny_llama,
                                                             load_in_4bit=True, max_steps=1))


@pytest.mark.integration
def test_cli_finetunes_from_the_config_on_redocred(shared_data, tiny_llama, tiny_encoder_dir,
                                                  tmp_path):
    from typer.testing import CliRunner

    from spacy_lmrc.cli import app
    from spacy_lmrc.proposer.model import RCPModel

    proposer = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16)
    proposer.settings.trained = True
    proposer.save_pretrained(tmp_path / "proposer")
    result = CliRunner().invoke(app, [
        "finetune-classifier", "configs/classifier_rc.cfg", "-o", str(tmp_path / "rc"),
        "--paths.train", str(shared_data / "redocred" / "dev_revised.json"),
        "--paths.labels", str(shared_data / "redocred" / "rel_info.json"),
        "--paths.proposer", str(tmp_path / "proposer"),
        "--corpora.train.corpus.first", "3", "--finetune.base_model", tiny_llama,
        "--finetune.max_steps", "3", "--finetune.batch_size", "1",
        "--finetune.max_tokens", "1",  # the token budget ends training after the first step
    ])
    assert result.exit_code == 0, result.output
    stored = RCModel.from_pretrained(tmp_path / "rc").description
    assert stored["steps"] == 1 and stored["task"]["pair_source"] == "candidates"
    assert stored["task"]["allow_none"] and stored["task"]["negative_source"] == "candidates"
    counts = stored["data_counts"]
    # as many negatives (the proposer's best-scored pairs without relation) as related pairs
    assert 0 < counts["negative_pairs"] <= counts["related_pairs"]
    assert "(3 documents)" in stored["data"]
    assert len(stored["task"]["labels"]) == 96
    # the paper's baseline (every pair), trained to the RC's tokens
    result = CliRunner().invoke(app, [
        "finetune-classifier", "configs/classifier_baseline.cfg", "-o", str(tmp_path / "base"),
        "--paths.train", str(shared_data / "redocred" / "dev_revised.json"),
        "--paths.labels", str(shared_data / "redocred" / "rel_info.json"),
        "--corpora.train.first", "3", "--finetune.base_model", tiny_llama,
        "--finetune.batch_size", "1", "--task.train_negatives", "null",
        "--match-tokens", str(tmp_path / "rc"),
    ])
    assert result.exit_code == 0, result.output
    baseline = RCModel.from_pretrained(tmp_path / "base").description
    assert baseline["settings"]["max_tokens"] == stored["train_tokens"]
    assert baseline["train_tokens"] >= stored["train_tokens"] and baseline["steps"] == 1
    assert baseline["schedule_steps"] == 1  # the schedule ends where those tokens do


def test_both_trainers_check_their_settings_one_way(tmp_path):
    from spacy_lmrc.errors import InputError
    from spacy_lmrc.proposer.training import TrainSettings
    from spacy_lmrc.training_config import load_config, settings_from_section

    with pytest.raises(InputError, match=r"unknown setting\(s\) \['epochz'\] in \[finetune\]"):
        settings_from_section(FinetuneSettings, {"epochz": 1}, "finetune")
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['epochz'\] in \[training\]"):
        TrainSettings.from_config({"epochz": 1})
    assert settings_from_section(FinetuneSettings, {"seed": 3}, "finetune").seed == 3
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.cfg")


def test_the_classifier_decodes_with_the_end_token_it_was_trained_with(tiny_llama, toy_doc,
                                                                      tmp_path, monkeypatch):
    """SmolLM2's tokenizer is rebuilt at every load, and transformers versions disagree on its
    end token (<|im_start|> under 5.17, <|im_end|> under 5.25): a classifier decodes until the
    end token its answers were trained with, whatever the installed version builds."""
    from spacy_lmrc.classifier import model as model_module

    task = LMRCTask(labels=LABELS)
    out = tmp_path / "rc"
    finetune(task, [toy_doc], out, FinetuneSettings(base_model=tiny_llama, method="full",
                                                    max_steps=1, warmup_steps=0))
    classifier = RCModel.from_pretrained(out)
    trained = classifier.description["tokenizer"]
    assert trained["eos_token"] == "<|im_end|>" and (out / "tokenizer_config.json").exists()
    load = model_module.load_tokenizer

    def other_version(path):
        tokenizer = load(path)
        tokenizer.eos_token = "<|im_start|>"
        return tokenizer

    monkeypatch.setattr(model_module, "load_tokenizer", other_version)
    backend = HFBackend()
    backend.use_classifier(classifier)
    with pytest.warns(UserWarning, match=r"trained to end answers with '<\|im_end\|>'"):
        tokenizer = backend.tokenizer
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id == trained["eos_token_id"]
    request, _ = task.build_request(toy_doc)
    (answers,) = backend.answer([request], task.prompt_format)
    assert len(answers) == 12 and backend._spaces
    assert all(space.end_id == trained["eos_token_id"] for space in backend._spaces.values())


def test_a_folder_of_the_earlier_layout_still_loads(tiny_llama, toy_doc, tmp_path):
    """Folders written before the classifier recorded its method, task kind and tokenizer
    (e.g. ../models/rc150/bfloat16): a LoRA adapter without tokenizer files, task settings that
    still held the text prompt's (template_text, pairs_per_prompt...)."""
    import srsly

    task = LMRCTask(labels=LABELS, allow_none=True)
    out = tmp_path / "rc"
    finetune(task, [toy_doc], out, FinetuneSettings(base_model=tiny_llama, method="lora",
                                                    max_steps=1, warmup_steps=0))
    description = srsly.read_json(out / "lmrc_training.json")
    for key in ("method", "task_kind", "tokenizer"):
        del description[key]
    description["task"].update({"template_text": "{{ text }}", "pairs_per_prompt": 20})
    srsly.write_json(out / "lmrc_training.json", description)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    classifier = RCModel.from_pretrained(out)
    assert classifier.method == "lora" and classifier.task_kind == "lmrc"
    assert classifier.task().get_config() == task.get_config()
    backend = HFBackend()
    backend.use_classifier(classifier)
    (answers,) = backend.answer([task.build_request(toy_doc)[0]], task.prompt_format)
    assert len(answers) == 12 and all(answer for answer in answers)
