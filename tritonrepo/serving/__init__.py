"""Running tritonserver: discovery of the binary, the process, and the serve command's orchestration."""
