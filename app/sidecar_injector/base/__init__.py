"""The bottom layer: quantities, printable text, the public annotation/label keys, YAML I/O.

It imports nothing else of the package.
"""
