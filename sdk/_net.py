"""Network names: loopback hosts, DNS names, host:port authorities, and the DNS subtrees the
vendors' hosts need (which the intercept CA may be permitted for). One copy of each, shared by
the guard, the config reader, the CA and both proxy doors."""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Iterable

from veilpix import adapters
from veilpix._errors import ConfigError

__all__ = [
    "LOOPBACK_NAMES",
    "check_domain",
    "covered",
    "is_dns_name",
    "is_loopback",
    "no_proxy_split",
    "permitted_domains",
    "split_authority",
    "uncovered_patterns",
    "vendor_domains",
]


# The names a destination may use for this machine (plain HTTP is allowed to them)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


@functools.lru_cache(maxsize=256)
def is_loopback(host: str, *, names: tuple[str, ...] = LOOPBACK_NAMES) -> bool:
    """Whether ``host`` (an IP literal, brackets allowed, or one of ``names``) is this
    machine."""
    if host.lower() in names:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_authority(text: str, default: int | None) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) as (lower-case host without brackets or a
    trailing dot, port or ``default``); ``("", None)`` for a bad port."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    host = host.lower().removesuffix(".")
    if not port_text:
        return host, default
    if not port_text.isdigit() or len(port_text) > 5:
        return "", None
    return host, int(port_text)


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Names that hold other people's services: a CA permitted for one could sign for all of them.
# Public suffixes of the ccTLD kind ("co.uk") are caught by _SECOND_LEVEL below.
_SHARED_PARENTS = frozenset(
    {
        "amazonaws.com",
        "appspot.com",
        "azure.com",
        "azurewebsites.net",
        "blogspot.com",
        "cloudflare.com",
        "cloudfront.net",
        "firebaseapp.com",
        "github.io",
        "google.com",
        "googleapis.com",
        "herokuapp.com",
        "microsoft.com",
        "netlify.app",
        "pages.dev",
        "vercel.app",
        "web.app",
        "windows.net",
        "workers.dev",
    }
)
_SECOND_LEVEL = frozenset(
    {
        "ac",
        "co",
        "com",
        "edu",
        "go",
        "gob",
        "gov",
        "govt",
        "ltd",
        "mil",
        "ne",
        "net",
        "nic",
        "nom",
        "or",
        "org",
        "plc",
        "sch",
    }
)


def is_dns_name(host: str) -> bool:
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 10.0.0.1 and friends
    )


def check_domain(name: str, where: str = "intercept.extra_domains") -> str:
    """``name`` as a DNS name the intercept CA may be permitted for (lower case, no trailing
    dot), or :class:`ConfigError`: DNS names only, no wildcards, no IP addresses, and nothing
    as broad as a public suffix ("com", "co.uk") or a shared cloud parent ("googleapis.com")."""
    if not isinstance(name, str):
        raise ConfigError(f"{where} must hold strings, not {name!r}")
    host = name.lower().removesuffix(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise ConfigError(
            f"{where}: {name!r} is an IP address; the CA signs for DNS names only",
            hint="name the host, e.g. gateway.corp.example",
        )
    if "*" in host or host.startswith("."):
        raise ConfigError(
            f"{where}: {name!r} is a pattern; write the plain name",
            hint=f"{host.lstrip('*.')!r} already covers its subdomains",
        )
    if not is_dns_name(host):
        raise ConfigError(
            f"{where}: {name!r} is not a DNS name",
            hint="letters, digits and '-' in dot-separated labels, e.g. gateway.corp.example",
        )
    labels = host.split(".")
    too_broad = (
        len(labels) == 1
        or host in _SHARED_PARENTS
        or (len(labels) == 2 and len(labels[1]) == 2 and labels[0] in _SECOND_LEVEL)
    )
    if too_broad:
        raise ConfigError(
            f"{where}: {name!r} is too broad: the CA could then sign for sites that are not "
            "yours or not AI vendors",
            hint="name the exact host, or a zone only that service uses, such as api.example.com",
        )
    return host


# -- which names the CA may sign for ----------------------------------------------------------


def _minimal(names: Iterable[str]) -> tuple[str, ...]:
    """Sorted, without duplicates and without names another entry's subtree already holds."""
    unique = set(names)
    return tuple(sorted(n for n in unique if not any(n.endswith("." + o) for o in unique)))


@functools.cache
def _vendor_plan() -> tuple[tuple[str, ...], tuple[str, ...]]:
    names: list[str] = []
    skipped: list[str] = []
    for vendor in adapters.vendors():
        for pattern in vendor.host_patterns:
            text = pattern.lower()
            zone = text.removeprefix("*.")
            if any(c in zone for c in "*?[") or (zone != text and zone.count(".") < 2):
                skipped.append(pattern)  # not expressible as a subtree, or too broad
                continue
            try:
                names.append(check_domain(zone, f"adapter {vendor.name} host"))
            except ConfigError:
                skipped.append(pattern)
    return _minimal(names), tuple(skipped)


def vendor_domains() -> tuple[str, ...]:
    """The DNS subtrees the registered vendors' hosts need (each covers its subdomains)."""
    return _vendor_plan()[0]


def uncovered_patterns() -> tuple[str, ...]:
    """Vendor host patterns no subtree expresses exactly; only the concrete hosts the adapters
    list for them are permitted (``*-aiplatform.googleapis.com``: the known Vertex regions)."""
    return _vendor_plan()[1]


def permitted_domains(extra_domains: Iterable[str] = ()) -> tuple[str, ...]:
    """The vendors' subtrees plus ``extra_domains`` (checked), minimal and sorted."""
    return _minimal((*vendor_domains(), *(check_domain(d) for d in extra_domains)))


def covered(host: str, domains: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``domains`` or below one (DNS name-constraint semantics)."""
    host = host.lower().removesuffix(".")
    return any(host == d or host.endswith("." + d) for d in domains)


# -- NO_PROXY ----------------------------------------------------------------------------------

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def _no_proxy_entry(entry: str) -> tuple[str, bool] | None:
    """A ``NO_PROXY`` entry as (the name or address it covers, whether it is a plain suffix),
    read the way the widest client reads it: a ``scheme://`` in front and a path behind are
    ignored (httpx), a port is ignored, every leading ``*`` and ``.`` is dropped (requests
    and urllib drop all dots; proxy-from-env makes ``*x`` "ends with x", with no dot
    needed). None for an entry that is no plain name, address or CIDR block: kept by no
    rule, so it is taken out."""
    text = _SCHEME.sub("", entry.strip().lower())
    if "/" in text:
        head, _, tail = text.partition("/")
        text = text if _is_address(head) and tail.isdigit() else head  # CIDR, or a path
    if _is_address(text.split("/")[0]):  # an address or a CIDR block (IPv6 without brackets)
        return text, False
    host, _ = split_authority(text, None)  # brackets, a port and a trailing dot go
    starred = host.startswith("*")
    name = host.lstrip("*.")
    if _is_address(name):
        return name, False
    if host == "*" or (starred and not name):
        return "", True  # every host
    if not name or not _NAME.match(name):
        return None
    return name, starred


def _bypasses(entry: str, patterns: Iterable[str]) -> bool:
    """Whether a ``NO_PROXY`` entry could send a host matching one of ``patterns`` (exact
    names or fnmatch patterns) around the proxy, in any client (see :func:`_no_proxy_entry`).
    Addresses and CIDR blocks cover no vendor host (clients match them against literal
    addresses only)."""
    read = _no_proxy_entry(entry)
    if read is None:
        return True
    name, suffix = read
    if _is_address(name.split("/")[0]):
        return False
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            if pattern == name or pattern.endswith("." + name):
                return True
            if suffix and pattern.endswith(name):
                return True
            continue
        tail = pattern[pattern.rindex("*") + 1 :]  # what every matching host ends with
        if (
            fnmatch.fnmatchcase(name, pattern)
            or fnmatch.fnmatchcase("x." + name, pattern)
            or tail.endswith("." + name)
            or (suffix and (tail.endswith(name) or fnmatch.fnmatchcase("x" + name, pattern)))
        ):
            return True
    return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def no_proxy_split(value: str, hosts: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``NO_PROXY``'s entries (separated by commas or white space) as (kept, removed):
    removed are those that would send a request to a registered vendor (or to one of
    ``hosts``, names from the config's base URLs) around the intercept proxy, unchecked,
    in some client, and those no client rule reads as a plain name or address."""
    patterns = [p.lower() for v in adapters.vendors() for p in v.host_patterns]
    patterns += [h.lower() for h in hosts]
    kept: list[str] = []
    removed: list[str] = []
    for entry in re.split(r"[,\s]+", value):
        if entry:
            (removed if _bypasses(entry, patterns) else kept).append(entry)
    return kept, removed
