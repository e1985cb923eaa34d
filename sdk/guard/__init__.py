"""The core every door runs an outbound request through: policy, images, record."""
