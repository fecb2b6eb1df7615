"""Engine builds with TensorRT-LLM: version facts, build specs, pure command lines and the one adapter that runs them."""
