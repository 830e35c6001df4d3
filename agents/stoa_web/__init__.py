"""``stoa api``: the HTTP API of conversations, agents and model policies (FastAPI, OpenAPI from the CRD
models), authenticated and authorized by Kubernetes on every call, and the web console it serves."""
