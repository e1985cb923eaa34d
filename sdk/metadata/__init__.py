"""Metadata payload readers (EXIF, XMP, IPTC, ICC) that turn a scan into report findings."""
