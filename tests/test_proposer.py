"""The RCP candidate proposer: features, windowed encoding, model, threshold policies, training.

Unit tests use a tiny BERT built from a config with MiniLM's tokenizer (random weights, fast).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from spacy_lmrc.proposer.encoder import encode_windowed, encoder_window, plan_windows
from spacy_lmrc.proposer.features import MARKER, SpecialTokens, featurize
from spacy_lmrc.proposer.model import (
    RCPModel,
    RCPSettings,
    evidence_loss,
    is_rcp_folder,
    ranking_loss,
)
from spacy_lmrc.proposer.threshold import (
    best_f1_threshold,
    kept_fraction_threshold,
    make_recall_within_budget_policy,
    make_target_recall_policy,
    pair_prf,
    recall_vs_kept,
    target_recall_threshold,
)
from spacy_lmrc.util import minilm_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture
def tiny_model(tiny_encoder_dir):
    torch.manual_seed(0)
    return RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16).eval()


# features
def test_features_mark_every_mention(toy_doc, tokenizer):
    feats = featurize(toy_doc, tokenizer, with_labels=True)
    marker_id = tokenizer(MARKER, add_special_tokens=False)["input_ids"][0]
    ids = feats.input_ids
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    n_mentions = sum(len(e["mentions"]) for e in toy_doc._.entities)
    assert ids.count(marker_id) == 2 * n_mentions
    for ent, positions in zip(toy_doc._.entities, feats.entity_pos):
        assert len(positions) == len(ent["mentions"])
        for m, pos in zip(ent["mentions"], positions):
            assert ids[pos] == marker_id
            first_word = tokenizer(toy_doc[m["start"]].text, add_special_tokens=False)["input_ids"]
            assert ids[pos + 1:pos + 1 + len(first_word)] == first_word
    assert len(feats.pairs) == 4 * 3
    positives = {p for p, y in zip(feats.pairs, feats.labels) if y == 1.0}
    assert positives == {(0, 1), (3, 2), (0, 2)}


def test_special_tokens_of_bert(tokenizer):
    special = SpecialTokens.from_tokenizer(tokenizer)
    assert special.start == [tokenizer.cls_token_id]
    assert special.end == [tokenizer.sep_token_id]


# windows
@pytest.mark.parametrize("length", [5, 512, 513, 700, 1022, 1023, 1500, 3000])
def test_plan_windows_cover_sequence_within_window(length):
    window, n_start, n_end = 512, 1, 1
    spans = plan_windows(length, window, n_start, n_end)
    covered = np.zeros(length, dtype=int)
    for a, b in spans:
        extra = (n_start if a > 0 else 0) + (n_end if b < length else 0)
        assert b - a + extra <= window
        covered[a:b] += 1
    assert covered.min() >= 1
    if length <= window:
        assert spans == [(0, length)]
    elif length <= 2 * window - n_start - n_end:
        assert len(spans) == 2  # ATLOP's two windows


def test_encoder_window_reads_positions():
    assert encoder_window(SimpleNamespace(max_position_embeddings=512, model_type="bert")) == 512
    roberta = SimpleNamespace(max_position_embeddings=514, model_type="roberta", pad_token_id=1)
    assert encoder_window(roberta) == 512


class TokenLocalEncoder(torch.nn.Module):
    """A fake encoder whose states depend on the token only and whose attention is uniform
    over the window: stitching must reproduce the full-sequence states exactly."""

    def __init__(self, heads: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, dim)
        self.heads = heads

    def forward(self, input_ids, attention_mask, output_attentions=True):
        hidden = self.embed(input_ids)
        mask = attention_mask[:, None, None, :].float()
        att = mask.expand(-1, self.heads, input_ids.size(1), -1)
        att = att / att.sum(-1, keepdim=True)
        return SimpleNamespace(last_hidden_state=hidden, attentions=(att,))


def test_stitching_restores_states_and_normalised_attention():
    torch.manual_seed(0)
    encoder = TokenLocalEncoder()
    special = SpecialTokens(start=[1], end=[2])
    length = 40
    ids = torch.cat([torch.tensor([1]), torch.randint(5, 100, (length - 2,)), torch.tensor([2])])
    full_h, full_a = encode_windowed(encoder, ids[None], [length], special, window=64)
    win_h, win_a = encode_windowed(encoder, ids[None], [length], special, window=16)
    assert len(plan_windows(length, 16, 1, 1)) > 2
    torch.testing.assert_close(win_h[0], full_h[0])
    att = win_a[0]
    assert att.shape == full_a[0].shape
    torch.testing.assert_close(att.sum(-1), torch.ones(3, length))
    # a token only seen in the first window attends uniformly to that window's real tokens
    first_only = att[0, 0]
    assert torch.count_nonzero(first_only) == 15
    # tokens never sharing a window do not attend to each other
    assert att[0, 0, -1] == 0


def test_windowed_path_equals_single_pass_when_it_fits(tiny_model, toy_doc):
    feats = tiny_model.featurize(toy_doc)
    batch = tiny_model.collate([feats])
    length = len(feats.input_ids)
    with torch.no_grad():
        direct = tiny_model.encoder(input_ids=batch["input_ids"], output_attentions=True)
        hid, att = encode_windowed(tiny_model.encoder, batch["input_ids"], [length],
                                   tiny_model.special, window=length)
    torch.testing.assert_close(hid[0], direct.last_hidden_state[0])
    torch.testing.assert_close(att[0], direct.attentions[-1][0])
    single = tiny_model.predict_proba([feats])[0]
    tiny_model.window = length
    windowed = tiny_model.predict_proba([feats])[0]
    np.testing.assert_array_equal(single, windowed)


def test_long_document_goes_through_windows(tiny_model, toy_doc):
    feats = tiny_model.featurize(toy_doc)
    tiny_model.window = 16
    probs = tiny_model.predict_proba([feats, feats])
    assert probs[0].shape == (12,)
    assert np.all((probs[0] > 0) & (probs[0] < 1))
    np.testing.assert_allclose(probs[0], probs[1], rtol=1e-5)


# model
def test_grouped_bilinear_matches_explicit_outer_product(tiny_model):
    z1, z2 = torch.randn(7, 64), torch.randn(7, 64)
    b1, b2 = z1.view(-1, 4, 16), z2.view(-1, 4, 16)
    explicit = tiny_model.bilinear((b1.unsqueeze(3) * b2.unsqueeze(2)).reshape(7, -1))
    torch.testing.assert_close(tiny_model.grouped_bilinear(z1, z2), explicit.squeeze(-1))


def test_entity_embedding_is_logsumexp_of_mention_markers(tiny_model, toy_doc):
    feats = tiny_model.featurize(toy_doc)
    seq = torch.randn(len(feats.input_ids), 32)
    att = torch.softmax(torch.randn(4, len(seq), len(seq)), -1)
    captured = {}
    original = tiny_model.head_extractor.forward

    def spy(x):
        captured["x"] = x
        return original(x)

    tiny_model.head_extractor.forward = spy
    tiny_model._pair_embeddings(seq, att, feats.entity_pos, torch.tensor([[0, 1]]))
    head = captured["x"][0, :32]
    expected = torch.logsumexp(seq[feats.entity_pos[0]], dim=0)
    torch.testing.assert_close(head, expected)
    # localized context: attention of head and tail mentions, multiplied, head-averaged
    a_h = att[:, feats.entity_pos[0]].mean(1)
    a_t = att[:, feats.entity_pos[1]].mean(1)
    q = (a_h * a_t).mean(0)
    q = q / (q.sum() + 1e-5)
    torch.testing.assert_close(captured["x"][0, 32:], q @ seq)


def test_few_steps_overfit_toy_document(tiny_model, toy_doc):
    torch.manual_seed(0)
    feats = tiny_model.featurize(toy_doc, with_labels=True)
    batch = tiny_model.collate([feats])
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=3e-3)
    tiny_model.train()
    losses = []
    for _ in range(40):
        loss = tiny_model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    probs = tiny_model.predict_proba([feats])[0]
    labels = np.array(feats.labels)
    assert np.all(probs[labels == 1] > 0.5) and np.all(probs[labels == 0] < 0.5)


def test_ranking_loss_weighs_only_misordered_pairs():
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    ordered = torch.tensor([8.0, -8.0, -9.0, 9.0])
    misordered = torch.tensor([-8.0, 8.0, -9.0, 9.0])
    assert ranking_loss(ordered, labels) < 1e-3
    # 4 (related, unrelated) pairs, margins s_unrelated - s_related: 16, -1, -1, -18
    expected = torch.nn.functional.softplus(torch.tensor([16.0, -1.0, -1.0, -18.0])).mean()
    torch.testing.assert_close(ranking_loss(misordered, labels), expected, atol=1e-4, rtol=0)
    assert ranking_loss(ordered, torch.zeros(4)) == 0 and ranking_loss(ordered, torch.ones(4)) == 0


def test_ranking_weight_adds_the_ranking_term(tiny_model, toy_doc):
    batch = tiny_model.collate([tiny_model.featurize(toy_doc, with_labels=True)])
    tiny_model.eval()
    with torch.no_grad():
        plain = tiny_model(**batch)
        ranked = tiny_model(**batch, ranking_weight=0.5)
    expected = plain["loss"] + 0.5 * ranking_loss(plain["logits"], batch["labels"])
    torch.testing.assert_close(ranked["loss"], expected)


def test_features_place_sentences_and_evidence(toy_doc, tokenizer):
    feats = featurize(toy_doc, tokenizer, with_labels=True)
    assert len(feats.sentence_starts) == 3 and feats.sentence_starts[0] == 1  # after [CLS]
    marker_id = tokenizer(MARKER, add_special_tokens=False)["input_ids"][0]
    # sentence 1 opens with the marker of "She", sentence 2 with that of "Babbage"
    assert feats.input_ids[feats.sentence_starts[1]] == marker_id
    assert feats.entity_pos[0][1] == feats.sentence_starts[1]
    assert feats.entity_pos[2][1] == feats.sentence_starts[2]
    evidence = dict(zip(feats.pairs, feats.pair_evidence))
    assert evidence[(0, 1)] == [0] and evidence[(3, 2)] == [2] and evidence[(0, 2)] == [1]
    assert all(evidence[p] == [] for p, y in zip(feats.pairs, feats.labels) if y == 0)


def test_evidence_outside_the_sentences_names_the_document(toy_doc, tokenizer):
    toy_doc._.relations = [dict(toy_doc._.relations[0], evidence=[0, 5])]
    with pytest.raises(ValueError, match=r"relations\[0\]\.evidence.*Ada Lovelace"):
        featurize(toy_doc, tokenizer, with_labels=True)


def test_evidence_loss_is_the_kl_to_the_evidence_sentences():
    # 6 wordpieces in sentences starting at 0, 2 and 4; three pairs, the first without evidence
    attention = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
                              [0.1, 0.1, 0.2, 0.2, 0.2, 0.2],
                              [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]])
    total, count = evidence_loss(attention, [0, 2, 4], [[], [1, 2], [1]])
    assert count == 2
    # pair 1: target (0, 1/2, 1/2) against mass (0.2, 0.4, 0.4); pair 2: all mass on sentence 1
    expected = 2 * 0.5 * np.log(0.5 / 0.4) + 0.0
    assert total.item() == pytest.approx(expected, abs=1e-6)
    none, zero = evidence_loss(attention, [0, 2, 4], [[], [], []])
    assert zero == 0 and none.item() == 0


def test_evidence_weight_adds_the_mean_evidence_term(tiny_model, toy_doc):
    feats = tiny_model.featurize(toy_doc, with_labels=True)
    batch = tiny_model.collate([feats])
    assert batch["evidence"] == [(feats.sentence_starts, feats.pair_evidence)]
    tiny_model.eval()
    with torch.no_grad():
        plain = tiny_model(**batch)
        guided = tiny_model(**batch, evidence_weight=0.5)
    term = (guided["loss"] - plain["loss"]) / 0.5
    assert term.item() > 0  # an untrained attention is spread beyond the evidence
    torch.testing.assert_close(plain["logits"], guided["logits"])


def test_evidence_term_moves_the_attention_onto_the_evidence(tiny_model, toy_doc):
    feats = tiny_model.featurize(toy_doc, with_labels=True)
    batch = tiny_model.collate([feats])

    def evidence_term() -> float:
        with torch.no_grad():
            plain = tiny_model(**batch)["loss"]
            return (tiny_model(**batch, evidence_weight=1.0)["loss"] - plain).item()

    before = evidence_term()
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=3e-3)
    tiny_model.train()
    for _ in range(20):
        tiny_model(**batch, evidence_weight=1.0)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    tiny_model.eval()
    assert evidence_term() < 0.5 * before


def test_save_pretrained_round_trip(tiny_model, toy_doc, tmp_path):
    tiny_model.settings.threshold = 0.37
    tiny_model.save_pretrained(tmp_path / "rcp")
    assert is_rcp_folder(tmp_path / "rcp")
    loaded = RCPModel.from_pretrained(tmp_path / "rcp")
    assert loaded.settings == tiny_model.settings
    feats = tiny_model.featurize(toy_doc)
    np.testing.assert_array_equal(tiny_model.predict_proba([feats])[0],
                                  loaded.predict_proba([feats])[0])


def test_from_pretrained_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved candidate proposer"):
        RCPModel.from_pretrained(tmp_path)


def test_settings_validate_block_size(tiny_encoder_dir):
    with pytest.raises(ValueError, match="multiple of block_size"):
        RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=60, block_size=16)
    assert RCPSettings.from_dict({"encoder": "x", "unknown": 1}).encoder == "x"


def test_bf16_autocast_on_cpu_stays_close_to_fp32(tiny_model, toy_doc):
    feats = [tiny_model.featurize(toy_doc)]
    fp32 = tiny_model.predict_proba(feats)[0]
    bf16 = tiny_model.predict_proba(feats, bf16=True)[0]
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.02)


def test_only_the_last_layer_materialises_attention(tiny_encoder_dir, tiny_model, toy_doc):
    from transformers import AutoModel

    from spacy_lmrc.proposer.encoder import LAST_LAYER_MAPS

    assert tiny_model.encoder.config._attn_implementation == LAST_LAYER_MAPS
    eager = AutoModel.from_pretrained(str(tiny_encoder_dir), attn_implementation="eager").eval()
    ids = torch.tensor([tiny_model.featurize(toy_doc).input_ids] * 2)
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    with torch.no_grad():
        ours = tiny_model.encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
        reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(ours.attentions) == 1
    real = mask.bool()
    torch.testing.assert_close(ours.last_hidden_state[real], reference.last_hidden_state[real],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.attentions[0], reference.attentions[-1], atol=1e-6,
                               rtol=1e-4)


def test_attention_dropout_is_set_and_saved(tiny_encoder_dir, tmp_path):
    model = RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16,
                                  attention_dropout=0.0)
    attention = [m for m in model.encoder.modules() if getattr(m, "layer_idx", None) is not None]
    assert attention and all(d.p == 0.0 for m in attention for d in m.children()
                             if isinstance(d, torch.nn.Dropout))
    model.save_pretrained(tmp_path / "rcp")
    loaded = RCPModel.from_pretrained(tmp_path / "rcp")
    assert loaded.settings.attention_dropout == 0.0
    assert all(d.p == 0.0 for m in loaded.encoder.modules()
               if getattr(m, "layer_idx", None) is not None
               for d in m.children() if isinstance(d, torch.nn.Dropout))


# relation-type hints
@pytest.fixture
def hinted_model(tiny_encoder_dir):
    torch.manual_seed(0)
    return RCPModel.from_encoder(str(tiny_encoder_dir), emb_size=64, block_size=16,
                                 relation_types=["P19", "P170", "P1327", "P17"]).eval()


def test_features_carry_each_pairs_relations(toy_doc, tokenizer):
    feats = featurize(toy_doc, tokenizer, with_labels=True)
    by_pair = dict(zip(feats.pairs, feats.pair_relations))
    for rel in toy_doc._.relations:
        assert rel["label"] in by_pair[(rel["head"], rel["tail"])]
    assert all((labels != []) == (y == 1.0) for labels, y in zip(feats.pair_relations,
                                                                 feats.labels))


def test_hints_head_learns_the_gold_types(hinted_model, toy_doc):
    feats = hinted_model.featurize(toy_doc, with_labels=True)
    batch = hinted_model.collate([feats])
    assert batch["type_labels"].shape == (len(feats.pairs), 4)
    assert batch["type_labels"].sum() == len(toy_doc._.relations)
    optimizer = torch.optim.AdamW(hinted_model.parameters(), lr=3e-3)
    hinted_model.train()
    for _ in range(40):
        hinted_model(**batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    scores = hinted_model.predict_scores([feats])[0]
    assert scores.types.shape == (len(feats.pairs), 4)
    from spacy_lmrc.proposer.training import hint_recall

    recall = hint_recall([feats], [scores], hinted_model.settings.relation_types, (1, 4))
    assert recall == {1: 1.0, 4: 1.0}


def test_hints_head_round_trips(hinted_model, toy_doc, tmp_path):
    hinted_model.save_pretrained(tmp_path / "rcp")
    loaded = RCPModel.from_pretrained(tmp_path / "rcp")
    assert loaded.settings.relation_types == ["P19", "P170", "P1327", "P17"]
    feats = [hinted_model.featurize(toy_doc)]
    np.testing.assert_array_equal(hinted_model.predict_scores(feats)[0].types,
                                  loaded.predict_scores(feats)[0].types)


# threshold policies
def test_threshold_policies():
    probs = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
    labels = np.array([1, 0, 1, 1, 0, 0], dtype=float)
    best = best_f1_threshold(probs, labels)
    assert 0.3 < best < 0.4  # keeps the top four: P 3/4, R 1, F1 0.857
    assert pair_prf(probs, labels, best)["f1"] == pytest.approx(6 / 7)
    t = target_recall_threshold(probs, labels, 0.6)
    assert 0.4 < t < 0.6  # the top three reach recall 2/3
    assert pair_prf(probs, labels, t)["kept"] == 3
    assert make_target_recall_policy(1.0)(probs, labels) == pytest.approx(0.35)
    rows = recall_vs_kept(probs, labels, [0.5, 0.05])
    assert [r["kept_fraction"] for r in rows] == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError):
        make_target_recall_policy(1.5)


def test_kept_fraction_threshold_never_exceeds_the_budget():
    probs = np.array([0.9, 0.8, 0.8, 0.4, 0.3, 0.1, 0.05, 0.01, 0.0, 0.0])
    assert pair_prf(probs, probs, kept_fraction_threshold(probs, 0.2))["kept"] == 1
    assert pair_prf(probs, probs, kept_fraction_threshold(probs, 0.3))["kept"] == 3
    assert pair_prf(probs, probs, kept_fraction_threshold(probs, 0.0))["kept"] == 0
    assert kept_fraction_threshold(probs, 1.0) == 0.0


def test_recall_within_budget_policy():
    probs = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1, 0.05, 0.02, 0.01, 0.0])
    labels = np.array([1, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    # recall 2/3 needs the top three: within a budget of 50%
    reached = make_recall_within_budget_policy(0.6, 0.5)(probs, labels)
    assert pair_prf(probs, labels, reached)["kept"] == 3
    # recall 1 needs seven pairs: the budget (30%) caps it
    capped = make_recall_within_budget_policy(1.0, 0.3)(probs, labels)
    assert pair_prf(probs, labels, capped)["kept"] == 3
    with pytest.raises(ValueError):
        make_recall_within_budget_policy(0.9, 0.0)


def test_length_grouped_batches_hold_similar_lengths(tiny_model):
    from spacy_lmrc.proposer.features import DocFeatures
    from spacy_lmrc.proposer.training import TrainSettings, _loader

    feats = [DocFeatures(input_ids=[101] + [7] * n + [102], entity_pos=[[1], [2]],
                         pairs=[(0, 1), (1, 0)], labels=[1.0, 0.0]) for n in range(10, 330, 5)]
    settings = TrainSettings(batch_size=4)
    widths = [b["input_ids"].shape[1] for b in _loader(feats, settings, tiny_model)]
    assert len(widths) == 16
    padding = sum(w * 4 for w in widths) - sum(len(f.input_ids) for f in feats)
    settings.group_by_length = False
    shuffled = [b["input_ids"].shape[1] for b in _loader(feats, settings, tiny_model)]
    assert padding < 0.5 * (sum(w * 4 for w in shuffled) - sum(len(f.input_ids) for f in feats))


def test_threshold_ties_are_not_split():
    probs = np.array([0.7, 0.7, 0.2])
    labels = np.array([1, 0, 0], dtype=float)
    t = best_f1_threshold(probs, labels)
    assert pair_prf(probs, labels, t)["kept"] == 2


def test_metrics_json_round_trip():
    row = pair_prf(np.array([0.6]), np.array([1.0]), 0.5)
    assert json.loads(json.dumps(row)) == row


def test_predictions_come_back_in_input_order(tiny_model, toy_doc):
    short = toy_doc.copy()
    short._.entities = toy_doc._.entities[:2]
    feats = [tiny_model.featurize(toy_doc), tiny_model.featurize(short),
             tiny_model.featurize(toy_doc)]
    together = tiny_model.predict_proba(feats, batch_size=2)
    assert [len(p) for p in together] == [12, 2, 12]
    for f, p in zip(feats, together):
        np.testing.assert_allclose(p, tiny_model.predict_proba([f])[0], rtol=1e-5, atol=1e-6)


def test_old_checkpoint_metrics_become_fractions():
    from spacy_lmrc.proposer.training import in_fractions

    old = {"best": [50.0, -1.0], "history": [
        {"dev_p": 40.0, "dev_r": 80.0, "dev_f1": 50.0, "dev_kept_fraction": 10.0,
         "dev_f1_tuned": 60.0, "dev_threshold_tuned": 0.3, "loss": 0.7}]}
    state = in_fractions(old)
    assert state["best"] == [0.5, -1.0] and state["metrics_in"] == "fractions"
    assert state["history"][0] == pytest.approx(
        {"dev_p": 0.4, "dev_r": 0.8, "dev_f1": 0.5, "dev_kept_fraction": 0.1,
         "dev_f1_tuned": 0.6, "dev_threshold_tuned": 0.3, "loss": 0.7})
    assert in_fractions(json.loads(json.dumps(state))) == state  # converted once only


def test_model_best_selection_key_is_recall_at_the_kept_budget_when_set():
    """With ``select_kept_fraction`` the epoch keeping most related pairs within the budget
    wins, even at a lower pair F1; without it pair F1 at 0.5 decides (LMRC's rule)."""
    from spacy_lmrc.errors import InputError
    from spacy_lmrc.proposer.training import TrainSettings

    earlier = {"dev_f1": 0.60, "dev_f1_tuned": 0.62, "dev_recall_at_kept": {"0.15": 0.86}}
    later = {"dev_f1": 0.58, "dev_f1_tuned": 0.61, "dev_recall_at_kept": {"0.15": 0.87}}
    by_f1 = TrainSettings()
    by_recall = TrainSettings.from_config({"select_kept_fraction": 0.15})
    assert by_f1.selection_key(earlier) > by_f1.selection_key(later)
    assert by_recall.selection_key(later) > by_recall.selection_key(earlier)
    assert by_recall.selection_key(later) > [-1.0, -1.0]  # the untrained state's key
    with pytest.raises(InputError, match="select_kept_fraction"):
        TrainSettings.from_config({"select_kept_fraction": 1.5})
