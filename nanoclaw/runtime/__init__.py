"""Container runtime: detect the engine, talk to its CLI, build the agent image."""
from nanoclaw.runtime._args import container_user, give_to_container, hardening_args, run_args, running_as_root
from nanoclaw.runtime._engine import ContainerProcess, Runtime, RuntimeUnavailable
from nanoclaw.runtime._image import ImageBuilder
from nanoclaw.runtime._network import InternalNetwork

__all__ = ["ContainerProcess", "ImageBuilder", "InternalNetwork", "Runtime", "RuntimeUnavailable",
           "container_user", "give_to_container", "hardening_args", "run_args", "running_as_root"]
