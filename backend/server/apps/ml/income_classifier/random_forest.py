from apps.ml.income_classifier.classifier import IncomeClassifier


class RandomForestIncomeClassifier(IncomeClassifier):
    name = "random forest"
    description = "Random forest over the 14 raw Adult features, ordinal-encoded categoricals."

    @staticmethod
    def make_estimator():
        # Imported here: serving never loads scikit-learn for an ONNX model.
        from sklearn.ensemble import RandomForestClassifier

        # min_samples_leaf keeps the forest small enough to load in well under a second.
        return RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, random_state=1234, n_jobs=-1
        )
