"""Task metrics computed offline: GLUE, ROUGE, perplexity, recall accuracy.
Imports no other hedgehog package."""
