"""``veilpix.Client`` and ``veilpix.AsyncClient``: one API across vendors, through the guard.

* ``_client``: the two clients (their I/O: the guarded httpx2 client, downloads, sleeping);
* ``_core``: what both share (building a call, reading answers, retries, download checks);
* ``_steps``: the steps a plan yields and the values it works with (``Call``, ``Output``, ...);
* ``plans/<vendor>``: each vendor's plans and facts, ``plans.VENDORS`` keyed by adapter name;
* ``_planning``: the pieces plans are built from; ``_vendor_errors``: vendor error answers;
* ``_results``: ``Result`` and ``GeneratedImage``.
"""
