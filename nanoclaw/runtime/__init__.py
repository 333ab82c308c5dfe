"""Container runtime: detect the engine, talk to its CLI, build the agent image."""
from nanoclaw.runtime._engine import ContainerProcess, Runtime, RuntimeUnavailable
from nanoclaw.runtime._image import ImageBuilder

__all__ = ["ContainerProcess", "ImageBuilder", "Runtime", "RuntimeUnavailable"]
