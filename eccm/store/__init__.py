"""The record directory: file names, rotation, the recorder, sidecars, the disk budget."""
