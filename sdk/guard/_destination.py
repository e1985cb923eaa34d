"""Where a request goes, and what the vendor lets veilpix control there: the vendor and
region from its host, HTTPS, the allowed vendors and countries, the regional host the policy
asks for, and the vendor's per-request privacy controls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from veilpix import adapters
from veilpix._errors import DOCS
from veilpix._net import is_loopback
from veilpix._policy import Policy
from veilpix._words import plural
from veilpix.guard._record_facts import path_models
from veilpix.guard._request import Outbound
from veilpix.guard._rules import Block
from veilpix.guard._work import Work

__all__ = [
    "privacy_headers",
    "resolve",
    "route_region",
    "same_vendor",
    "sort_controls",
    "vendor_fetches",
]

# Keys under which a URL is an image the vendor would fetch, and keys under which it is not
_IMAGE_KEY_HINTS = ("image", "mask", "img", "photo", "picture", "reference", "control")
_NOT_IMAGE_KEYS = ("webhook", "callback", "redirect", "polling_url")


def resolve(
    request: Outbound,
    work: Work,
    vendor_name: str | None,
    default: Policy,
    vendor_policies: Mapping[str, Policy],
) -> str:
    """Whose host the request goes to (vendor, region, country, endpoint, into ``work``) and
    the URL it goes to (the regional host the policy asks for); :class:`Block` for an
    unknown host, plain HTTP, a vendor or country the policy does not allow. From the vendor
    on, ``work.policy`` is the vendor's own policy where one is set."""
    policy = work.policy = default
    parts = urlsplit(request.url)
    host = (parts.hostname or "").lower()
    work.host = host
    port = parts.port
    try:  # the door's word, else the policy's map of hosts, else the vendors' own hosts
        found = adapters.resolve(host, port, policy.vendor_hosts, name=vendor_name)
    except KeyError as exc:
        raise Block("destination.vendor", str(exc.args[0])) from exc
    if found is not None:
        work.vendor, work.region = found
    if work.vendor is None:
        raise Block(
            "destination.unknown_host",
            f"{host or request.url!r} is not the host of a registered AI vendor",
            "veilpix only sends to vendors it has an adapter for; map a gateway or test "
            "server to one with "
            + work.setting(
                "Policy(vendor_hosts={'host': 'openai'})",
                'base_url = "https://HOST/..." under [vendors.openai] in veilpix.toml',
            ),
        )
    vendor = work.vendor
    # (routing to a regional host below changes the host, never the path)
    work.path = parts.path
    work.models.update(path_models(vendor, parts.path))
    # From here on the vendor's own policy applies, when one is set for it.
    policy = work.policy = vendor_policies.get(vendor.name, default)
    plain_ok = parts.scheme == "http" and (is_loopback(host) or not policy.https_only)
    if parts.scheme != "https" and not plain_ok:
        raise Block(
            "destination.https_only",
            f"plain {parts.scheme}:// to {host} would send the data unencrypted",
            "use https (plain http is allowed only to loopback, for tests and local models)",
        )
    if policy.allowed_vendors is not None and vendor.name not in policy.allowed_vendors:
        raise Block(
            "destination.vendor",
            f"{vendor.display} is not among the allowed vendors "
            f"({', '.join(sorted(policy.allowed_vendors)) or 'none'})",
            "if it should be allowed, add it to "
            + work.setting(
                "Policy(allowed_vendors=...)",
                f'allowed_vendors under [policy] (or the app\'s [apps.NAME]) in veilpix.toml: "{vendor.name}"',
            ),
        )
    url = route_region(request.url, work)
    # A host the policy names (an Azure resource in Sweden) is where the policy says.
    work.country = policy.host_countries.get(host) or (
        work.region.country if work.region is not None else None
    )
    if policy.allowed_countries is not None and work.country not in policy.allowed_countries:
        where = work.country or "an unknown country"
        raise Block(
            "destination.country",
            f"{vendor.display} at {work.host} processes requests in {where}, which the "
            "policy does not allow",
            work.setting(
                "choose a region inside the allowed countries (Policy(region='eu')) or widen "
                "Policy(allowed_countries=...)",
                f'choose a region inside the allowed countries (region = "eu" under '
                f"[vendors.{vendor.name}.policy] in veilpix.toml) or widen allowed_countries "
                "under [policy]",
            ),
        )
    work.endpoint = vendor.endpoint_for(request.method, work.path)
    return url


def route_region(url: str, work: Work) -> str:
    """Send to the regional host the policy asks for, when the vendor offers it."""
    wanted = work.policy.region
    vendor = work.vendor
    assert vendor is not None
    if wanted is None:
        return url
    if work.region is not None and work.region.name == wanted:
        work.applied.append(f"regional endpoint ({wanted})")
        return url
    target = next((r for r in vendor.regions if r.name == wanted), None)
    concrete = next((h for h in target.hosts if "*" not in h), None) if target else None
    if target is None or concrete is None or work.region is None:
        work.unavailable.append(f"regional endpoint ({wanted})")
        return url
    if work.region is not vendor.regions[0]:
        # Addressed to a specific regional host already (e.g. a BFL polling URL on
        # api.us1.bfl.ai, where the job lives): moving it would break the call.
        # allowed_countries decides whether that host may be used.
        work.unavailable.append(
            f"regional endpoint ({wanted}): the request names region {work.region.name}"
        )
        return url
    parts = urlsplit(url)
    if vendor.path_names_region:
        work.unavailable.append(f"regional endpoint ({wanted}): the request names its location")
        return url
    netloc = concrete if parts.port is None else f"{concrete}:{parts.port}"
    work.applied.append(f"regional endpoint ({wanted})")
    work.region, work.host = target, concrete
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def sort_controls(work: Work) -> None:
    vendor, policy = work.vendor, work.policy
    assert vendor is not None
    op = work.endpoint.operation if work.endpoint is not None else None
    for control in vendor.controls:
        if control.level == "account":
            work.account.append(control.name)
        elif control.level == "unavailable":
            work.unavailable.append(control.name)
        elif control.header is None and control.json_field is None:
            continue  # routing controls (regions) are recorded by _route_region
        elif not policy.privacy_controls:
            work.unavailable.append(f"{control.name} (turned off by policy)")
        elif (
            (control.operations and op not in control.operations)
            or (control.json_field is not None and work.endpoint is None)
            or (control.when_region is not None and policy.region != control.when_region)
        ):
            continue
        else:
            work.applied.append(control.name)
    if policy.content_usage:
        work.applied.append(f"Content-Usage: {policy.content_usage}")
    if policy.sec_gpc:
        work.applied.append("Sec-GPC: 1")
    applied = {a.lower() for a in work.applied}
    missing = [c for c in policy.require_controls if c not in applied]
    if missing:
        raise Block(
            "controls.required",
            f"{vendor.display} cannot apply the required "
            f"{plural(len(missing), 'control')} {', '.join(sorted(missing))} on this call",
            f"what each vendor offers per request: {DOCS}vendors.md",
        )


def privacy_headers(work: Work) -> list[tuple[str, str]]:
    vendor, policy = work.vendor, work.policy
    assert vendor is not None
    headers = []
    if policy.content_usage:
        headers.append(("Content-Usage", policy.content_usage))
    if policy.sec_gpc:
        headers.append(("Sec-GPC", "1"))
    headers.extend(
        c.header for c in vendor.controls if c.header is not None and c.name in work.applied
    )
    return headers


def same_vendor(url: str, work: Work) -> bool:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    found = adapters.match(host)
    return found is not None and work.vendor is not None and found[0].name == work.vendor.name


def vendor_fetches(
    path: tuple[Any, ...],
    slots: tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]],
    unknown_endpoint: bool,
) -> bool:
    """Is the URL at ``path`` an image the vendor would download itself?"""
    keys = [p.lower() for p in path if isinstance(p, str)]
    if any(k in _NOT_IMAGE_KEYS for k in keys):
        return False
    exact, deep = slots
    if path in exact:
        return True
    image_key = bool(keys) and any(h in k for k in keys[-2:] for h in _IMAGE_KEY_HINTS)
    # Model-specific inputs (Replicate, fal, BFL) and unknown endpoints on a vendor host: a URL
    # under an image-like key is an image input.
    return image_key and (path in deep or unknown_endpoint)
