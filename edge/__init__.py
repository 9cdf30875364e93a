"""edgeloop-agent: the device side of the loop.

Depends only on the `edge` extra (numpy, bsdiff4, zstandard, paho-mqtt, python-tuf,
cryptography and a TFLite interpreter). Never imports scikit-learn or boto3.
"""
