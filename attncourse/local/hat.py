"""Being written (issue 20): this file's module is not registered yet."""

__all__: list[str] = []
