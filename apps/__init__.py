"""Apps built on trained checkpoints (the Gradio demo comes with the inference issue)."""
