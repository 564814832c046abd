"""The OpenAI Responses API (``/v1/responses``), served by translating to and from chat completions."""
