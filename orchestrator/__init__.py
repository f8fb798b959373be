"""The call engine: plain Python + asyncio, no Django.

Consumers feed a :class:`orchestrator.session.CallSession` 16 kHz PCM16 audio; the
session runs VAD turn-taking and the streaming STT -> LLM -> TTS loop, and reports
what happened through a ``CallRecorder`` that the Django side implements.
"""
