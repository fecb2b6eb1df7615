"""The Triton model repository: parameters, rendering (pure), writing, manifest and validation."""
