"""Plumbing: errors, temporary files and renames, the ffmpeg lookup, inputs and their names,
the separated/ layout, the version, optional extras, and link downloads.

May import: the standard library and third-party packages only. Never audio_utils/,
processors/ or the entry points, and no audio math and no Config here.
"""
