"""The local runtime: the cloud side of the loop on one machine, speaking the real protocols.

moto's server stands in for S3, SQS, KMS, DynamoDB and the IoT data plane; an
MQTT broker (amqtt embedded, or any broker by URL) carries device traffic; a
small router does what AWS wires (SQS → retrain, IoT rules → presign/status,
the rollout schedule); an HTTP endpoint stands in for CloudFront.
"""
