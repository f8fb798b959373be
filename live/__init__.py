"""The runtime of live calls: the media socket base every consumer builds on, and the calls
running in this process. Imported by ``telephony/`` and ``simulator/``; imports ``calls/``
(records) and ``orchestrator/`` (the engine); ``calls/`` never imports it."""
