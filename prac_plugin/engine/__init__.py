"""The training engine: data, models, schedules and the Accelerate training loop."""
