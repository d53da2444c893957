"""Notebooks 02, 03 and 12: launching real process groups (`launch`), DDP examples, pipeline schedules and their engine, tensor parallelism and FSDP (`sharding`)."""
