"""The comparison of experiments (the ``report`` stage's library): tables, figures, the HTML page, and what the
experiments' MLflow parents receive (their metrics, the report, the trained model)."""
