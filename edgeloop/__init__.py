"""edgeloop: continuous machine learning at the edge.

The top level stays import-light: a device imports `edgeloop.contract` and
`edgeloop.delta` without pulling in scikit-learn or boto3.
"""

__version__ = "0.1.0"
