from apps.ml.income_classifier.classifier import IncomeClassifier


class ExtraTreesIncomeClassifier(IncomeClassifier):
    name = "extra trees"
    description = "Extremely randomized trees over the 14 raw Adult features, ordinal-encoded."

    @staticmethod
    def make_estimator():
        # Imported here: serving never loads scikit-learn for an ONNX model.
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier(
            n_estimators=100, min_samples_leaf=5, random_state=1234, n_jobs=-1
        )
