"""veilpix.proxy: the local gateway and HTTPS intercept proxy (see docs/proxy.md)."""
