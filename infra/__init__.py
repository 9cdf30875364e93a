"""The CDK app that deploys the loop (`cdk.json` at the repository root)."""
