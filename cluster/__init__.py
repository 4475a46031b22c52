"""The simulator proper: the engine, serving (plans, frontends, routers, workloads),
results (traces, metrics) and the commands."""
