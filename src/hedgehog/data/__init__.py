"""DataModules (WikiText, MQAR, GLUE, SAMSum); each takes a hub name or a local path."""
