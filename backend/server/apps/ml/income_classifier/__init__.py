"""The income classifier: predicts whether a person's income is ``<=50K`` or ``>50K``.

Each concrete classifier names its estimator (``make_estimator``) and its registry identity; the
rest (validation, preprocessing, artifact format, post-processing) is shared in ``classifier``.
"""
from apps.ml.income_classifier.extra_trees import ExtraTreesIncomeClassifier
from apps.ml.income_classifier.random_forest import RandomForestIncomeClassifier

CLASSIFIERS = (RandomForestIncomeClassifier, ExtraTreesIncomeClassifier)

__all__ = ["CLASSIFIERS", "ExtraTreesIncomeClassifier", "RandomForestIncomeClassifier"]
