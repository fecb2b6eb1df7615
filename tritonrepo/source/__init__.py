"""Where a model comes from: the embedded tiny model, a local directory, or the Hugging Face Hub."""
