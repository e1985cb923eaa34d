"""The transfer log on PostgreSQL: one log for a fleet of machines, with the file log's
promises (see docs/many-machines.md).

Open it with a URL wherever a log path is accepted: ``AuditLog("postgresql://...")``,
``--log postgresql://...``, ``[log] url``, ``$VEILPIX_LOG``. Each writer (a process with the
log open for writing) appends to a chain of its own, signed by a key that never leaves the
process and registered with the fleet's key file; checkpoints of all writers form one line,
so that the database alone, with the fleet's public key, shows a writer removed, cut back
or forged (:mod:`veilpix.audit.fleet._verify`).
"""

from veilpix.audit.fleet._log import FleetLog
from veilpix.audit.fleet._url import default_key_path, is_url, redact

__all__ = ["FleetLog", "default_key_path", "is_url", "redact"]
