"""DataModules (MQAR, WikiText, GLUE, SAMSum, text, text mix) on one base, ``base.DataModuleBase``; files or the hub.
May import: ``hedgehog.models`` (pretrained tokenizers), ``hedgehog.metrics``."""
