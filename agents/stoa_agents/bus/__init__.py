"""RabbitMQ topology and confirmed publishing (aio-pika)."""
