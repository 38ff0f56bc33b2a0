def canonical_paths(result, generator, request, public):
    """drf-spectacular hook: list paths as clients call them, without the optional trailing slash."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result
