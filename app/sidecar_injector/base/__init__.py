"""The bottom layer: quantities, printable text, the public annotation/label keys, YAML I/O (imports nothing of the package)."""
