"""Right-sizing: a pure ``recommend(history, request) -> (resources, reasons)``.

Nothing heavy is imported here; import the submodule you need.
"""
