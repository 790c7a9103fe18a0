"""Adapters between chatledger and other frameworks' memory interfaces.

Each submodule imports its framework, so importing this package imports none of them:

- ``chatledger.integrations.langchain``: :class:`ChatledgerHistory`, a LangChain
  ``BaseChatMessageHistory`` (``pip install langchain-core``).
- ``chatledger.integrations.agents``: :class:`ChatledgerSession`, an OpenAI Agents SDK
  ``Session`` (``pip install openai-agents``).

The Anthropic message conversion needs no third-party package and lives in
``chatledger.anthropic``.
"""
