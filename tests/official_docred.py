"""The official DocRED scoring procedure, restated step by step as its evaluation.py runs it.

Used only to cross-check spacy_lmrc.metrics.score_docred on many prediction files: the
official script sorts, drops adjacent duplicates, and counts with its own loops.
"""


def official_scores(truth, predictions, train_truth):
    fact_in_train = set()
    for doc in train_truth:
        vertex_set = doc["vertexSet"]
        for label in doc["labels"]:
            for n1 in vertex_set[label["h"]]:
                for n2 in vertex_set[label["t"]]:
                    fact_in_train.add((n1["name"], n2["name"], label["r"]))

    std, title2vertex, tot_evidences = {}, {}, 0
    for doc in truth:
        title2vertex[doc["title"]] = doc["vertexSet"]
        for label in doc["labels"]:
            std[(doc["title"], label["r"], label["h"], label["t"])] = set(label["evidence"])
            tot_evidences += len(label["evidence"])
    tot_relations = len(std)

    tmp = sorted(predictions, key=lambda x: (x["title"], x["h_idx"], x["t_idx"], x["r"]))
    answer = [tmp[0]] if tmp else []
    for i in range(1, len(tmp)):
        x, y = tmp[i], tmp[i - 1]
        key_x = (x["title"], x["h_idx"], x["t_idx"], x["r"])
        if key_x != (y["title"], y["h_idx"], y["t_idx"], y["r"]):
            answer.append(tmp[i])

    correct_re = correct_evidence = pred_evi = correct_in_train = 0
    for x in answer:
        title, h_idx, t_idx, r = x["title"], x["h_idx"], x["t_idx"], x["r"]
        if title not in title2vertex:
            continue
        vertex_set = title2vertex[title]
        evi = set(x.get("evidence", []))
        pred_evi += len(evi)
        if (title, r, h_idx, t_idx) in std:
            correct_re += 1
            correct_evidence += len(std[(title, r, h_idx, t_idx)] & evi)
            in_train = False
            for n1 in vertex_set[h_idx]:
                for n2 in vertex_set[t_idx]:
                    if (n1["name"], n2["name"], r) in fact_in_train:
                        in_train = True
            if in_train:
                correct_in_train += 1

    re_p = correct_re / len(answer) if answer else 0.0
    re_r = correct_re / tot_relations
    re_f1 = 2 * re_p * re_r / (re_p + re_r) if re_p + re_r > 0 else 0
    evi_p = correct_evidence / pred_evi if pred_evi > 0 else 0
    evi_r = correct_evidence / tot_evidences if tot_evidences else 0
    evi_f1 = 2 * evi_p * evi_r / (evi_p + evi_r) if evi_p + evi_r > 0 else 0
    ign_p = (correct_re - correct_in_train) / (len(answer) - correct_in_train + 1e-5)
    ign_f1 = 2 * ign_p * re_r / (ign_p + re_r) if ign_p + re_r > 0 else 0
    return {"precision": re_p, "recall": re_r, "f1": re_f1, "evidence_f1": evi_f1,
            "ign_f1": ign_f1}
