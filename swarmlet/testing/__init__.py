"""Helpers shared by tests, benchmarks and demos (test images, ...). Not used by the agent."""
