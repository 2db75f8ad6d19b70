"""Offline stand-in for the ``cached_path`` package OLMo-core imports (its real one pulls cloud
SDKs). The benchmark never fetches anything; any call says so."""


def cached_path(path, *args, **kwargs):
    raise RuntimeError(f"cached_path({path!r}) called in an offline benchmark")
