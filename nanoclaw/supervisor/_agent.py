"""What the runner is told about its model: a namespace's containerConfig.agent over the server's defaults."""
from __future__ import annotations

from nanoclaw.config import Settings
from nanoclaw.errors import Invalid
from nanoclaw.models import AgentConfig

# The model of a provider when neither the namespace nor NANOCLAW_AGENT_MODEL names one.
# OpenAI-compatible servers have no common model name: there one must be given.
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-5"}


def agent_settings(config: AgentConfig | None, settings: Settings) -> dict:
    """The `agent` object of the runner's stdin JSON; Invalid when no model can be chosen.

    monthlyTokenBudget stays on the host: the runner has no business with it.
    """
    config = config or AgentConfig()
    provider = config.provider or settings.agent_provider
    model = config.model
    if model is None and provider == settings.agent_provider:
        model = settings.agent_model or None
    model = model or DEFAULT_MODELS.get(provider)
    if model is None:
        raise Invalid(f"containerConfig.agent.model is required for provider {provider!r}: "
                      f"NANOCLAW_AGENT_MODEL does not name one for it", code="VALIDATION_ERROR")
    return {
        "provider": provider,
        "model": model,
        "mapping": config.mapping or provider,
        "maxSteps": config.maxSteps,
        "maxTokens": config.maxTokens,
        "maxContextTokens": config.maxContextTokens,
        "vision": config.vision,
        "mcpServers": {name: server.model_dump() for name, server in config.mcpServers.items()},
    }
