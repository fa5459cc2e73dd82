"""A Motion Canvas project as narrator reads it: its narrations (``scan``), the folder its Vite plugin
serves (``vite``) and the ``narrator.toml`` that ``init`` writes (``template``).

Importing this package costs nothing: tree-sitter is loaded only by the modules that parse.
"""
