"""The analyst's entry point: `wafersim.open_trace(PATH)` gives a run's tables as pandas
frames (cluster/results/loader.py). Imported lazily: `import wafersim` loads no pandas."""

__all__ = ["Trace", "ms", "open_trace"]


def __getattr__(name: str):
    if name in __all__:
        from cluster.results import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'wafersim' has no attribute {name!r}")
