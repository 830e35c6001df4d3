"""Stoa's test tooling: the scripted fake OpenAI-compatible provider (``stoa fake-model``), gateway test
helpers, the load generator and the benchmark sandbox. Production packages never import it (an
import-linter contract in ``make lint`` checks that); tests, benchmarks and the ``stoa`` command's lazy
dispatch table do."""
