"""``veilpix.Client`` and ``veilpix.AsyncClient``: one API across vendors, through the guard."""
