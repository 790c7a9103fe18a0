"""Adapters between chatledger and other frameworks' memory interfaces.

Each submodule imports its framework, so importing this package imports none of them:

- ``chatledger.integrations.langchain``: :class:`ChatledgerHistory`, a LangChain
  ``BaseChatMessageHistory`` (``pip install langchain-core``).
- ``chatledger.integrations.agents``: :class:`ChatledgerSession`, an OpenAI Agents SDK
  ``Session`` (``pip install openai-agents``).
- ``chatledger.integrations.anthropic``: :func:`to_anthropic` and :func:`anthropic_tools`,
  a window in Anthropic's Messages format (no third-party package needed).
"""
