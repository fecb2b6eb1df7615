"""The OpenAI-compatible front end: protocol models, serving logic, routes, and its Triton client."""
