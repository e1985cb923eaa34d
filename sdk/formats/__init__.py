"""Image container formats: bounded scanners and lossless strippers, no pixels.

Each format module reads one container (JPEG markers, PNG chunks, RIFF, GIF blocks, TIFF
tags, ISO-BMFF boxes) into a :class:`~veilpix.formats._scan.Scan` and, where it can, rebuilds
the file with only what a decoder needs.
"""
