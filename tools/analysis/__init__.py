"""Analysis tools: attention dumps, quantizer plots, prediction changes, sensitivity."""
