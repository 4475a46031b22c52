"""The engine: messages, the LP graph, conservative synchronization, partitions and the backends that run them."""
