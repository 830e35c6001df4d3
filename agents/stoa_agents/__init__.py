"""Stoa's durable multi-agent conversation runtime.

Pure core: ``protocol`` (wire format), ``turns.policy`` (who speaks, when it ends), ``turns.classify``
(ack / retry / reject), ``turns.prompts`` (chat messages). Shell: ``store`` (asyncpg), ``bus`` (aio-pika),
``model_client`` (aiohttp), ``runtime`` (the ``stoa agent`` process), ``control`` (start/suspend/resume/stop
and status, used by the operator), ``local`` (``stoa run``).
"""
