"""The model factory: train, evaluate, gate, export to TFLite, plan patches.

Plain Python over scikit-learn, runnable and testable without AWS. The Lambda
handlers call into it; so does `edgeloop train`.
"""
