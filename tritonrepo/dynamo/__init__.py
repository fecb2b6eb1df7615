"""NVIDIA Dynamo deployments: the deployment folder's manifest, its files, and running it."""
