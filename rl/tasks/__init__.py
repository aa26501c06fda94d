"""Embedded tasks: each folder holds a task's generator, its data and the builder of its base model."""
