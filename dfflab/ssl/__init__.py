"""Self-supervised pretraining stage (SimCLR, BYOL). Lives at dfflab.ssl, never top-level ``ssl``."""
