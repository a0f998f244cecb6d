"""Evaluation: the official SQuAD 2.0 metrics, scoring a model, no-answer threshold curves."""
