"""The image finder: every image in an outbound request body, whatever its shape, or a refusal."""
