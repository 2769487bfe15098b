"""Uploads: which files and keys (pure), when (pure schedule), what a verified object is
(pure), one object sent and proven, one file sent and archived, one run, the thread."""
