"""Chat models for the memory manager: the OpenAI-compatible adapter and structured answers."""

from memlane.llm.openai_chat import OpenAIChat
from memlane.llm.structured import Answer, ask, validate
from memlane.ports.llm import LLM, ChatMessage, ChatRequest, ChatResponse, Usage

__all__ = [
    "LLM",
    "Answer",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "OpenAIChat",
    "Usage",
    "ask",
    "validate",
]
