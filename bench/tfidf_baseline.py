"""TF-IDF (word 1-2 grams) + logistic regression on the same split neogen trains on: the baseline to beat.

    python bench/tfidf_baseline.py ../shared/data/student_questions/subjects-questions-subset.csv \
        --text-column eng --label-column Subject --test-ratio 0.2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from neogen.evaluate import classification_metrics
from neogen.prepare import clean, split
from neogen.read import load_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--test-ratio", type=float, default=0.2)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    examples, _ = load_examples(args.data, args.text_column, args.label_column)
    examples, _ = clean(examples)
    parts = split(examples, test_ratio=args.test_ratio, shuffle=args.shuffle, seed=args.seed)
    labels = sorted({ex.label for ex in parts["train"]})
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform([ex.text for ex in parts["train"]])
    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(x_train, [labels.index(ex.label) for ex in parts["train"]])
    probs = model.predict_proba(vectorizer.transform([ex.text for ex in parts["test"]]))
    metrics = classification_metrics([labels.index(ex.label) for ex in parts["test"]], np.asarray(probs), labels)
    print(json.dumps({k: metrics[k] for k in ("n", "accuracy", "macro_f1", "roc_auc", "log_loss")}, indent=2))


if __name__ == "__main__":
    main()
