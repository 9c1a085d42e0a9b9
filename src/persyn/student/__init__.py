"""Train the student on a dataset (TRL SFT) and evaluate it on held-out prompts."""
