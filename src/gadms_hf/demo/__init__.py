"""The web demo: describe a person, see who matches and which words counted (Gradio)."""
