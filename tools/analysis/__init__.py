"""Analysis of trained distillation runs: the computations behind ``tools/analyze.py`` and ``tools/plot_shots.py``.

- ``extra``: the check that the optional ``analysis`` extra (scikit-learn, matplotlib) is installed;
- ``run``: rebuild a run's trainer from its ``config.yaml`` and load its checkpoint;
- ``features``: extract the student's image features on the evaluation images (``FeatureSet``, ``features.npz``);
- ``metrics``: separability numbers, effective rank, one-vs-rest ANOVA F-scores, class-vector accuracy;
- ``report``: those numbers for one run's features, per feature space and per base / new group;
- ``shots``: accuracy-against-shots curves from the results that ``tools/parse_results.py`` reads;
- ``plots``: the t-SNE panels, the F-score heat maps and the shot curves (matplotlib, no display needed).
"""
