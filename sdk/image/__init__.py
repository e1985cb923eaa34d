"""The sanitize pipeline: sniff, scan, strip or re-encode from pixels, faces and size."""
