import copy
import json

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_lmrc.corpus import docs_to_result, read_docred, read_semeval, read_tacred
from spacy_lmrc.corpus.readers import create_docred_corpus
from spacy_lmrc.corpus.sentence import sentence_label
from spacy_lmrc.doc import entity_spans, is_intra_sentence, unique_display_names
from spacy_lmrc.errors import InputError, SkipReport


def _write(tmp_path, data, name="docs.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_docred_record_to_doc(toy_doc):
    assert toy_doc._.title == "Ada Lovelace"
    assert [s.text for s in toy_doc.sents][1].startswith("She worked")
    assert len(toy_doc._.entities) == 4
    ada = entity_spans(toy_doc)[0]
    assert [s.text for s in ada] == ["Ada Lovelace", "She"]
    assert ada[0].label_ == "PER"
    babbage = toy_doc._.entities[2]["mentions"][1]
    assert (babbage["start"], babbage["sent"]) == (15, 2)
    assert {(r["head"], r["tail"], r["label"]) for r in toy_doc._.relations} == {
        (0, 1, "P19"), (3, 2, "P170"), (0, 2, "P1327")}
    assert is_intra_sentence(toy_doc, 0, 1) and not is_intra_sentence(toy_doc, 1, 3)


def test_docbin_and_bytes_round_trip(toy_doc, nlp):
    toy_doc._.relation_candidates = [{"head": 0, "tail": 1, "score": 0.9}]
    toy_doc._.rag_examples = [{"text": "x", "head": "a", "tail": "b", "label": "P19",
                               "similarity": 0.5}]
    data = DocBin(docs=[toy_doc], store_user_data=True).to_bytes()
    doc = next(DocBin().from_bytes(data).get_docs(nlp.vocab))
    for attr in ("title", "entities", "relations", "relation_candidates", "rag_examples"):
        assert getattr(doc._, attr) == getattr(toy_doc._, attr), attr
    assert [t.is_sent_start for t in doc] == [t.is_sent_start for t in toy_doc]
    again = Doc(nlp.vocab).from_bytes(toy_doc.to_bytes())
    assert again._.entities == toy_doc._.entities


def test_result_json_round_trip(tmp_path, toy_record, nlp):
    docs = list(read_docred(_write(tmp_path, [toy_record]), nlp.vocab))
    result = docs_to_result(docs)
    assert {(r["title"], r["h_idx"], r["t_idx"], r["r"]) for r in result} == {
        ("Ada Lovelace", lab["h"], lab["t"], lab["r"]) for lab in toy_record["labels"]}
    assert all(set(r) == {"title", "h_idx", "t_idx", "r", "evidence"} for r in result)


def test_first_and_last_cut_in_file_order(tmp_path, toy_record, nlp):
    records = []
    for i in range(5):
        rec = dict(toy_record, title=f"doc {i}")
        records.append(rec)
    path = _write(tmp_path, records)
    assert [d._.title for d in read_docred(path, nlp.vocab, first=3)] == ["doc 0", "doc 1", "doc 2"]
    assert [d._.title for d in read_docred(path, nlp.vocab, last=2)] == ["doc 3", "doc 4"]
    assert [d._.title for d in read_docred(path, nlp.vocab, first=4, last=1)] == ["doc 3"]


def test_duplicate_gold_triples_kept_once(tmp_path, toy_record, nlp):
    toy_record["labels"].append(dict(toy_record["labels"][0]))
    doc = next(read_docred(_write(tmp_path, [toy_record]), nlp.vocab))
    assert len(doc._.relations) == 3


def test_test_split_without_labels(tmp_path, toy_record, nlp):
    del toy_record["labels"]
    doc = next(read_docred(_write(tmp_path, [toy_record]), nlp.vocab))
    assert doc._.relations == []


def test_unique_display_names():
    names = unique_display_names([["Schneider", "Willi Schneider"], ["Schneider"], ["Paris"],
                                  ["Paris"]])
    assert len(set(names)) == 4
    assert names[0] == "Willi Schneider" and names[1] == "Schneider"
    assert names[2] == "Paris" and names[3] == "Paris #2"


@pytest.mark.parametrize(
    "mutate,field,message",
    [
        (lambda r: r["vertexSet"][0][0].update(pos=[5, 9]), "vertexSet[0][0].pos",
         "outside its sentence"),
        (lambda r: r["vertexSet"][1][0].update(sent_id=7), "vertexSet[1][0].sent_id",
         "outside the document"),
        (lambda r: r["labels"][1].update(t=12), "labels[1].t", "out of range"),
        (lambda r: r["labels"][0].pop("r"), "labels[0].r", "missing"),
        (lambda r: r.update(sents=[]), "sents", "no sentences"),
        (lambda r: r.pop("vertexSet"), "vertexSet", "missing"),
        (lambda r: r["vertexSet"][2][0].pop("type"), "vertexSet[2][0].type", "missing"),
    ],
)
def test_bad_input_names_file_document_and_field(tmp_path, toy_record, nlp, mutate, field,
                                                 message):
    good = dict(copy.deepcopy(toy_record), title="fine")
    mutate(toy_record)
    path = _write(tmp_path, [good, toy_record])
    with pytest.raises(InputError) as info:
        list(read_docred(path, nlp.vocab))
    err = info.value
    assert (err.path, err.index, err.title, err.field) == (str(path), 1, "Ada Lovelace", field)
    assert message in str(err) and str(path) in str(err) and "document 1" in str(err)
    report = SkipReport()
    docs = list(read_docred(path, nlp.vocab, skip_invalid=True, report=report))
    assert [d._.title for d in docs] == ["fine"]
    assert len(report) == 1 and "skipped 1" in report.summary()


def test_malformed_json_names_the_file(tmp_path, nlp):
    path = tmp_path / "broken.json"
    path.write_text('[{"title": "x",')
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        list(read_docred(path, nlp.vocab))


def test_registered_reader_strips_gold_from_predicted(tmp_path, toy_record):
    nlp = spacy.blank("en")
    reader = spacy.registry.readers.get("spacy_lmrc.DocRedCorpus.v1")
    assert reader is create_docred_corpus
    examples = list(reader(_write(tmp_path, [toy_record]))(nlp))
    eg = examples[0]
    assert eg.predicted._.relations == [] and len(eg.reference._.relations) == 3
    assert eg.predicted._.entities == eg.reference._.entities
    assert [t.text for t in eg.predicted] == [t.text for t in eg.reference]


def test_semeval_with_integer_labels(tmp_path, nlp):
    sentences = _write(tmp_path, ["The <e1>child</e1> was wrapped into the <e2>cradle</e2>.",
                                  "A misty <e1>ridge</e1> uprises from the <e2>surge</e2>."],
                       "s.json")
    labels = _write(tmp_path, [1, 2], "l.json")
    names = _write(tmp_path, {"relation": {"names": ["Other", "Content-Container(e1,e2)",
                                                     "Entity-Origin(e1,e2)"]}}, "n.json")
    docs = list(read_semeval(sentences, nlp, relations_path=labels, label_names_path=names))
    assert docs[0].text == "The child was wrapped into the cradle."
    assert [e["name"] for e in docs[0]._.entities] == ["child", "cradle"]
    assert sentence_label(docs[0], "Other") == "Content-Container(e1,e2)"
    assert docs[1]._.title == "1"


def test_semeval_other_is_no_relation(tmp_path, nlp):
    path = _write(tmp_path, [{"sentence": "The <e1>a</e1> and <e2>b</e2>.", "relation": "Other"}])
    doc = next(read_semeval(path, nlp))
    assert doc._.relations == [] and sentence_label(doc, "Other") == "Other"


def test_semeval_missing_markup_is_reported(tmp_path, nlp):
    path = _write(tmp_path, [{"sentence": "No markup here.", "relation": "Other"}])
    with pytest.raises(InputError, match="<e1>"):
        list(read_semeval(path, nlp))


def test_tacred(tmp_path, nlp):
    record = {"id": "t1", "token": ["Bill", "Gates", "founded", "Microsoft", "."],
              "subj_start": 0, "subj_end": 1, "obj_start": 3, "obj_end": 3,
              "subj_type": "PERSON", "obj_type": "ORGANIZATION", "relation": "org:founded_by"}
    bad = dict(record, obj_end=9)
    path = _write(tmp_path, [record, bad])
    report = SkipReport()
    docs = list(read_tacred(path, nlp, skip_invalid=True, report=report))
    assert len(docs) == 1 and len(report) == 1
    assert [e["name"] for e in docs[0]._.entities] == ["Bill Gates", "Microsoft"]
    assert docs[0]._.entities[0]["type"] == "PERSON"
    assert sentence_label(docs[0], "no_relation") == "org:founded_by"


@pytest.mark.integration
def test_semeval_shared_split(shared_data, nlp):
    root = shared_data / "semeval2010"
    docs = list(read_semeval(root / "train_sentences.json", nlp,
                             relations_path=root / "train_relations.json",
                             label_names_path=root / "relations.json", last=1000))
    assert len(docs) == 1000
    assert all(len(d._.entities) == 2 for d in docs)


@pytest.mark.parametrize("data, expected", [
    ({"P17": "country", "P19": "place of birth"}, {"P17": "country", "P19": "place of birth"}),
    ({"Na": 0, "P19": 2, "P17": 1}, {"P17": "P17", "P19": "P19"}),  # rel2id.json, by id
    ({"relation": {"names": ["Other", "Cause-Effect(e1,e2)"]}},
     {"Other": "Other", "Cause-Effect(e1,e2)": "Cause-Effect(e1,e2)"}),
    (["per:title", "no_relation"], {"per:title": "per:title", "no_relation": "no_relation"}),
])
def test_one_loader_reads_every_relation_set_shape(tmp_path, data, expected):
    """Tasks, the sentence readers and --relation-set all read label files with one loader."""
    from spacy_lmrc.corpus.labels import load_relation_set
    from spacy_lmrc.tasks.lmrc import LMRCTask
    from spacy_lmrc.tasks.sentence import SentenceRETask

    path = _write(tmp_path, data, "labels.json")
    loaded = load_relation_set(path)
    assert loaded == expected and list(loaded) == list(expected)
    assert LMRCTask(labels_path=path).labels == expected
    sentence = SentenceRETask(labels_path=path, negative_label=next(iter(expected)))
    assert sentence.labels == expected  # a {label: name} file's names are display names


@pytest.mark.parametrize("data, message", [
    ({"P17": "country", "P19": ""}, "non-empty strings"),
    ({"a": 0, "b": 2}, "ids 0..N-1"),
    ({"Na": 0}, "the relation set is empty"),
    ({"P17": ["country"]}, "expected a non-empty list of names"),
])
def test_relation_set_files_of_no_known_shape_are_clear_errors(tmp_path, data, message):
    from spacy_lmrc.corpus.labels import load_relation_set

    with pytest.raises(InputError, match=message):
        load_relation_set(_write(tmp_path, data, "labels.json"))
