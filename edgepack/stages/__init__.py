"""Pipeline stages: plain model-file-in, model-file-out functions that return a decision record."""
