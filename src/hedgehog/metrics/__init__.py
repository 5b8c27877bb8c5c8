"""Task metrics computed offline: GLUE, ROUGE, perplexity, recall accuracy."""
