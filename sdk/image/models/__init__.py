"""Model files shipped inside veilpix."""
