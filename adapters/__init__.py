"""veilpix.adapters: one module per AI image vendor (see docs/vendors.md)."""
